#!/usr/bin/env python3
"""Plot the JSON lines `pit_bench.py --json FILE` wrote: one panel per workload, wall time
and peak RSS per engine. Usage: plot.py RESULTS.jsonl OUT.png (run with the bench venv's
python, which has matplotlib)."""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    height = sum(0.8 + 0.3 * len(r["results"]) for r in runs)
    fig, axes = plt.subplots(len(runs), 2, figsize=(13, height), squeeze=False,
                             gridspec_kw={"height_ratios": [len(r["results"]) for r in runs]})
    for row, run in zip(axes, runs):
        names = list(run["results"])
        walls = [run["results"][n]["wall"] for n in names]
        rss = [0 if run["results"][n].get("stopped") else run["results"][n]["rss"] for n in names]
        colors = ["tab:blue" if n.startswith("hindcast") and "floor" not in n
                  else "tab:gray" if not run["results"][n]["checked"] else "tab:orange" for n in names]
        for ax, values, label in ((row[0], walls, "wall time (s)"), (row[1], rss, "peak RSS (MiB)")):
            bars = ax.barh(range(len(names)), values, color=colors)
            ax.set_yticks(range(len(names)))
            ax.set_yticklabels(names if ax is row[0] else [""] * len(names), fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel(label, fontsize=8)
            ax.tick_params(axis="x", labelsize=8)
            for bar, value, name in zip(bars, values, names):
                text = f" {value:.2f}" if label.startswith("wall") else f" {value:.0f}"
                if run["results"][name].get("stopped"):
                    text = f" > {value:.0f} (stopped)" if label.startswith("wall") else ""
                ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, text,
                        va="center", fontsize=7)
            ax.margins(x=0.18)
        row[0].set_title(run["title"], fontsize=9, loc="left")
    fig.suptitle("hindcast vs peers, 2 cores, median of 3 (blue: hindcast; orange: peers, "
                 "answers checked equal; gray: not compared)", fontsize=9)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
