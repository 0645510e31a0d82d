"""Fixtures shared by the test files: `hindcast worker` processes on loopback."""

import os
import subprocess

import pytest


@pytest.fixture(scope="module")
def workers():
    """Three `hindcast worker` processes (the binary `run.sh` builds) on ports the system
    picks; their addresses. Stopped after the module's tests."""
    binary = os.environ.get("HINDCAST_BIN")
    if not binary:
        pytest.fail("HINDCAST_BIN is not set: run the tests with python/tests/run.sh")
    processes, addresses = [], []
    try:
        for _ in range(3):
            process = subprocess.Popen([binary, "worker", "--listen", "127.0.0.1:0"],
                                       stderr=subprocess.PIPE, text=True)
            processes.append(process)
            line = process.stderr.readline().strip()
            prefix = "hindcast worker listening on "
            assert line.startswith(prefix), f"the worker said {line!r}"
            addresses.append(line[len(prefix):])
        yield addresses
    finally:
        for process in processes:
            process.kill()
            process.wait()
