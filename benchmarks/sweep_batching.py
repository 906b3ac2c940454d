"""Benchmark: a 16-run sweep (4 initializers × 4 seeds, depth 10, width 256, batch 128, one epoch
of MNIST) trained as vmapped groups vs one run at a time, side by side in one invocation.

    python benchmarks/sweep_batching.py [--data-dir DIR] [--epochs 1] [--seeds 4] [--out benchmarks/results]

``--seeds 16`` makes it 64 runs (4 initializers × 16 seeds), all in one vmapped group (the GPU
script, ``benchmarks/gpu.sh``).

Both arms go through `initlab.runfolder.sweeps.run_sweep` in fresh folders; the sequential arm is the same
sweep with ``max_group=1``. Arms alternate (batched, sequential, batched, ...) for ``--repeats``
rounds so machine noise hits both alike. Writes a JSON file and prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import jax

from initlab.runfolder.experiment import versions
from initlab.runfolder.sweeps import SweepSpec, run_sweep

INITS = ["he_normal", "glorot_normal", "orthogonal", "lecun_normal"]


def spec(out: Path, epochs: int, seeds: int) -> SweepSpec:
    base = {
        "name": f"bench{len(INITS) * seeds}",
        "data": {"dataset": "mnist"},
        "model": {"depth": 10, "width": 256, "activation": "relu"},
        "train": {"optimizer": "sgd", "lr": 0.01, "batch_size": 128, "epochs": epochs},
        "log": {"every": 100, "out": str(out)},
    }
    return SweepSpec(base, {"model.init": INITS}, [], list(range(seeds)))


def timed(arm: str, epochs: int, seeds: int, data_dir: str | None) -> float:
    out = Path(tempfile.mkdtemp(prefix=f"initlab-bench-{arm}-"))
    n = len(INITS) * seeds
    try:
        t0 = time.perf_counter()
        report = run_sweep(spec(out, epochs, seeds), data_dir=data_dir, max_group=n if arm == "batched" else 1)
        elapsed = time.perf_counter() - t0
        assert report.count("completed") == n, report.statuses
        return elapsed
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="MNIST folder (default: INITLAB_DATA_DIR / cache)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=4, help="seeds per initializer (4 initializers): 4 → 16 runs")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of (batched, sequential)")
    parser.add_argument("--out", default="benchmarks/results", help="folder for the JSON result")
    args = parser.parse_args()

    n = len(INITS) * args.seeds
    times: dict[str, list[float]] = {"batched": [], "sequential": []}
    for _ in range(args.repeats):
        for arm in times:
            times[arm].append(timed(arm, args.epochs, args.seeds, args.data_dir))
            print(f"{arm:>10}: {times[arm][-1]:7.1f} s for {n} runs", flush=True)
    best = {arm: min(ts) for arm, ts in times.items()}
    result = {
        "benchmark": "sweep_batching",
        "grid": f"4 inits x {args.seeds} seeds, depth 10, width 256, batch 128, MNIST",
        "epochs": args.epochs,
        "seconds": times,
        "speedup_batched_over_sequential": best["sequential"] / best["batched"],
        "runs_per_hour": {arm: n * 3600 / t for arm, t in best.items()},
        "device": str(jax.devices()[0]),
        "machine": platform.platform(),
        "versions": versions(),
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / f"sweep_batching_{n}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"batched is {result['speedup_batched_over_sequential']:.2f}x faster than one run at a time "
        f"({result['runs_per_hour']['batched']:.0f} vs {result['runs_per_hour']['sequential']:.0f} runs/hour); "
        f"written to {path}"
    )


if __name__ == "__main__":
    main()
