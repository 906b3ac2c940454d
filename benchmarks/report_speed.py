"""Benchmark: `initlab report` over 1,000 synthetic run folders.

    python benchmarks/report_speed.py [--runs 1000]

Synthesizes run folders shaped like real ones (summary.json with config, history and per-layer
profiles; small CSVs beside it) for a grid of depth × init × lr × seeds, then times
``build_report`` in-process (best of 5) and the whole `initlab report --format csv` command in a
fresh process (interpreter start and imports included, best of 3).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from initlab.config import config_hash, from_dict, to_dict
from initlab.report.tables import build_report


def synthesize(root: Path, n_runs: int) -> None:
    rng = np.random.default_rng(0)
    inits = ["he_normal", "glorot_normal", "orthogonal", "lecun_normal", "standard"]
    lrs = [0.1, 0.03, 0.01, 0.003]
    seeds_per = 10
    combos = [(d, i, lr) for d in (5, 10, 20, 50, 100) for i in inits for lr in lrs]
    made = 0
    for d, init, lr in combos:
        for seed in range(seeds_per):
            if made == n_runs:
                return
            cfg = from_dict(
                {
                    "name": "synthetic",
                    "seed": seed,
                    "model": {"depth": d, "init": init},
                    "train": {"lr": lr, "steps": 1000},
                    "log": {"out": str(root)},
                }
            )
            path = root / f"synthetic-{config_hash(cfg)}"
            path.mkdir(parents=True)
            decay = {"he_normal": 1.0, "glorot_normal": 0.5}.get(init, 0.9)
            act = [float(decay**k * rng.uniform(0.8, 1.2)) for k in range(d + 1)]
            summary = {
                "status": "completed" if rng.random() > 0.05 else "diverged",
                "steps": 1000,
                "final": {"test_acc": float(rng.uniform(0.1, 0.98)), "test_loss": float(rng.uniform(0.05, 2.3))},
                "history": {
                    "step": [0, 469, 938, 1000],
                    "test_acc": sorted(rng.uniform(0.1, 0.98, 4).tolist()),
                    "test_loss": [2.3, 0.4, 0.2, 0.1],
                },
                "signal": {w: {"pre_var": act, "act_var": act, "grad_var": act[::-1]} for w in ("init", "final")},
                "divergence": None,
                "config": to_dict(cfg),
            }
            (path / "summary.json").write_text(json.dumps(summary))
            (path / "metrics.csv").write_text("step,epoch,train_loss,test_loss,test_acc,wall_time\n0,0,,2.3,0.1,0.5\n")
            made += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="initlab-report-bench-"))
    try:
        synthesize(root, args.runs)
        n = sum(1 for _ in root.iterdir())
        inproc = []
        for _ in range(5):
            t0 = time.perf_counter()
            rep = build_report([root])
            inproc.append(time.perf_counter() - t0)
        cli = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "initlab", "report", str(root), "--format", "csv"],
                check=True,
                capture_output=True,
            )
            cli.append(time.perf_counter() - t0)
        print(
            f"{n} run folders → {len(rep.rows)} configurations: build_report {min(inproc):.3f} s (best of 5), "
            f"`initlab report --format csv` {min(cli):.3f} s in a fresh process (best of 3)"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
