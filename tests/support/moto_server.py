"""A local S3 server for tests/s3.rs, with credential checking switched on.

moto accepts any credentials by default, which would hide a wrong secret. Here the first
few requests (creating an IAM user, its access key and an allow-S3 policy) run without
authentication; every request after that must be signed with that user's key. Prints one
JSON line {endpoint, access_key_id, secret_access_key, bucket} and serves until stdin
closes.
"""

import json
import os
import socket
import sys

# IAM calls below that may run unauthenticated; moto reads this when it handles requests.
os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "4"

import boto3  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

ADMIN = {"aws_access_key_id": "bootstrap", "aws_secret_access_key": "bootstrap"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", **ADMIN)
    iam.create_user(UserName="hindcast")
    key = iam.create_access_key(UserName="hindcast")["AccessKey"]
    policy = iam.create_policy(
        PolicyName="s3-all",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
            }
        ),
    )
    iam.attach_user_policy(UserName="hindcast", PolicyArn=policy["Policy"]["Arn"])
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
    )
    s3.create_bucket(Bucket="hindcast-test")
    print(
        json.dumps(
            {
                "endpoint": endpoint,
                "access_key_id": key["AccessKeyId"],
                "secret_access_key": key["SecretAccessKey"],
                "bucket": "hindcast-test",
            }
        ),
        flush=True,
    )
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main()
