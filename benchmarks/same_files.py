"""Every file a run writes, compared between two checkouts of initlab: a refactoring that claims
"behaviour unchanged" must leave them byte-identical, clock readings aside.

    python benchmarks/same_files.py --baseline /path/to/other/checkout [--data-dir DIR] [--out DIR]

Runs three workloads with each checkout (``python -m initlab`` in a fresh process whose
``initlab`` is imported from that checkout): the quickstart on MNIST, a sweep whose runs train as
one vmapped group, and a float16 run with histograms and saved parameters. Then compares every
file under the two output folders: CSVs row by row with the clock columns dropped, ``summary.json``
with its clock keys and folder paths dropped, every other file byte for byte. Prints one line per
file and exits 1 if any differs.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLOCK_COLUMNS = {"wall_time", "seconds", "time_s"}
CLOCK_KEYS = {"started_at", "steps_per_second", "run_dir", "out", "finished_at", "device"}

FLOAT16 = """name: f16
seed: 3
data: {dataset: mnist, train_size: 2048, test_size: 512, probe_size: 256}
model: {depth: 4, width: 64, activation: tanh, init: xavier_normal, dtype: float16}
train: {optimizer: sgd, lr: 0.05, batch_size: 64, steps: 120, loss_scale: dynamic}
log: {every: 20, histograms: 32}
"""

SWEEP = """name: vm
data: {dataset: mnist, train_size: 2048, test_size: 512, probe_size: 256}
model: {depth: 5, width: 64, activation: relu}
train: {optimizer: sgd, lr: 0.05, batch_size: 64, steps: 100}
log: {every: 25}
sweep:
  model.init: [he_normal, xavier_normal]
seeds: 2
"""


def produce(tree: Path, out: Path, data_dir: str) -> None:
    """The three workloads' run folders under ``out``, written by the initlab in ``tree``."""
    out.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "INITLAB_DATA_DIR": data_dir}
    (out / "f16.yaml").write_text(FLOAT16)
    (out / "vm.yaml").write_text(SWEEP)
    commands = [
        ["run", str(tree / "configs" / "quickstart.yaml"), "--out", "quickstart", "-q"],  # relative: the
        ["run", "f16.yaml", "--out", "f16", "-q"],  # folder is written into config.yaml
        ["sweep", "vm.yaml", "--out", "vm", "-q"],
    ]
    for args in commands:
        done = subprocess.run(
            [sys.executable, "-m", "initlab", *args], env=env, cwd=out, capture_output=True, text=True
        )
        if done.returncode != 0:
            sys.exit(f"{tree}: initlab {' '.join(args)} failed:\n{done.stderr}")


def canonical(path: Path) -> bytes:
    """A file's content with what a clock decides removed."""
    if path.suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
        return json.dumps([{k: v for k, v in r.items() if k not in CLOCK_COLUMNS} for r in rows]).encode()
    if path.suffix == ".json":
        return json.dumps(_scrub(json.loads(path.read_text())), sort_keys=True).encode()
    return path.read_bytes()


def _scrub(value):
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if k not in CLOCK_KEYS and not k.endswith("time_s")}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def compare(a: Path, b: Path) -> int:
    """Print each file's verdict; return how many differ or exist on one side only."""
    names = sorted(
        {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
        | {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    )
    bad = 0
    for name in names:
        if name.parts[-1].startswith(".") or name.suffix == ".lock":
            continue
        pa, pb = a / name, b / name
        if not (pa.exists() and pb.exists()):
            verdict = "only in " + ("this" if pa.exists() else "baseline")
        else:
            verdict = "same" if canonical(pa) == canonical(pb) else "DIFFERENT"
        bad += verdict != "same"
        print(f"{verdict:>16}  {name}")
    return bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, type=Path, help="the other checkout's root")
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("INITLAB_DATA_DIR", "data"),
        help="MNIST's folder (default $INITLAB_DATA_DIR)",
    )
    parser.add_argument("--out", type=Path, help="where to keep both output trees (default a temporary folder)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="same_files-"))
    this, base = out / "this", out / "baseline"
    produce(HERE.parent, this, args.data_dir)
    produce(args.baseline.resolve(), base, args.data_dir)
    bad = compare(this, base)
    print(f"{bad} file(s) differ" if bad else "every file the same (clock readings aside)", f"- outputs in {out}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
