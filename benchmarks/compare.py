"""initlab's training throughput against another checkout of initlab, side by side in one run.

    python benchmarks/compare.py --baseline /path/to/other/checkout [--rounds 3] [--only TEXT] [--data-dir DIR]

Each measurement is ``benchmarks/run.py``'s ``initlab_steps_per_s`` (steps/s over the training
loop's wall clock, statistics included) in a fresh process whose ``initlab`` is imported from
this checkout or from the baseline's; the two alternate round by round, so the machine's drift
hits both. Prints a Markdown table of medians and the ratio this / baseline per workload.
Use it to show that a change is throughput-neutral (e.g. the baseline a ``git archive`` of main).
A baseline from before the package layout (flat ``initlab/train.py`` etc.) is measured through
the same functions under their old module names.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# (label, Workload fields, log_every or None for statistics off, stats_on)
WORKLOADS = [
    ("depth 10, statistics every 10 on the training batch", {"depth": 10, "steps": 300}, 10, "train_batch"),
    ("depth 10, statistics every 10 on the probe", {"depth": 10, "steps": 300}, 10, "probe"),
    ("depth 10, statistics every step on the training batch", {"depth": 10, "steps": 200}, 1, "train_batch"),
    ("depth 10, statistics off", {"depth": 10, "steps": 300}, None, "train_batch"),
    ("depth 50, statistics every 10 on the training batch", {"depth": 50, "steps": 60}, 10, "train_batch"),
]

WORKER = """
import importlib, json, sys
sys.path[:0] = [{tree!r}, {bench!r}]
try:
    import initlab.train.loop
except ModuleNotFoundError:  # a checkout from before the packages (issue #36): the same modules, flat
    for new, old in {{"initlab.train.loop": "initlab.train", "initlab.train.cache": "initlab.cache",
                     "initlab.data.datasets": "initlab.data"}}.items():
        sys.modules[new] = importlib.import_module(old)
import run
from initlab.train.cache import enable_compilation_cache
enable_compilation_cache()
w = run.Workload(**{workload!r}, stats_on={stats_on!r})
run.initlab_steps_per_s(w, {data_dir!r}, {log_every!r})  # warm-up: compile (and fill the cache)
print(json.dumps([run.initlab_steps_per_s(w, {data_dir!r}, {log_every!r})["loop"] for _ in range(2)]))
"""


def measure(tree: Path, workload: dict, log_every: int | None, stats_on: str, data_dir: str | None) -> list[float]:
    """Steps/s of two measurements in a fresh process importing initlab from ``tree``."""
    code = WORKER.format(
        tree=str(tree), bench=str(HERE), workload=workload, stats_on=stats_on, data_dir=data_dir, log_every=log_every
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tree)
    if out.returncode:
        raise SystemExit(f"measurement in {tree} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, type=Path, help="the other initlab checkout (its root folder)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--data-dir", default=os.environ.get("INITLAB_DATA_DIR"), help="MNIST folder")
    parser.add_argument("--only", default="", help="measure only the workloads whose label contains this text")
    args = parser.parse_args()
    trees = {"this": HERE.parent, "baseline": args.baseline.resolve()}
    if not (trees["baseline"] / "initlab").is_dir():
        raise SystemExit(f"--baseline: {trees['baseline']} has no initlab/ package")
    rows = []
    for label, workload, every, on in (w for w in WORKLOADS if args.only in w[0]):
        runs: dict[str, list[float]] = {"this": [], "baseline": []}
        for r in range(args.rounds):
            order = ("this", "baseline") if r % 2 == 0 else ("baseline", "this")
            for name in order:
                runs[name] += measure(trees[name], workload, every, on, args.data_dir)
        med = {k: statistics.median(v) for k, v in runs.items()}
        rows.append(
            (
                label,
                med["this"],
                med["baseline"],
                med["this"] / med["baseline"],
                min(a / b for a, b in zip(runs["this"], runs["baseline"])),
                max(a / b for a, b in zip(runs["this"], runs["baseline"])),
            )
        )
        print(f"{label}: {med['this']:.0f} vs {med['baseline']:.0f} steps/s", file=sys.stderr, flush=True)
    print("| workload | this (steps/s) | baseline (steps/s) | ratio of medians | per-pair range |")
    print("| --- | --- | --- | --- | --- |")
    for label, a, b, ratio, lo, hi in rows:
        print(f"| {label} | {a:.0f} | {b:.0f} | {ratio:.2f} | {lo:.2f}–{hi:.2f} |")


if __name__ == "__main__":
    main()
