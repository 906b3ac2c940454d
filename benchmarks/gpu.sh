#!/usr/bin/env bash
# initlab on an NVIDIA GPU, in one prepared script (issue #37). Never part of the test suite.
#
#     bash benchmarks/gpu.sh [OUT]        # OUT defaults to benchmarks/results/gpu
#
# 1. A virtual environment (.venv-gpu) with initlab and JAX for CUDA 12: `pip install "jax[cuda12]"`.
#    On a machine without internet access, point PIP_FIND_LINKS at a folder of wheels (with
#    PIP_NO_INDEX=1); a JAX that already sees a GPU is kept as it is.
# 2. The quickstart (MNIST; $INITLAB_DATA_DIR or ../shared/data/mnist when beside the project).
# 3. `benchmarks/run.py --quick --only throughput,stats`: the same ratios as the CPU table
#    (statistics on the training batch, the probe, off, against a bare JAX loop), side by side.
# 4. `benchmarks/sweep_batching.py --seeds 16`: 64 runs (4 initializers × 16 seeds) as one vmapped
#    group against the same 64 runs one at a time.
# Everything lands in OUT: nvidia-smi's view, the quickstart's output and run folder, the JSON and
# Markdown tables of each benchmark, and gpu.md, which gathers them.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-benchmarks/results/gpu}"
mkdir -p "$OUT"

if [ -z "${INITLAB_DATA_DIR:-}" ] && [ -d ../shared/data/mnist ]; then
  INITLAB_DATA_DIR="$(cd ../shared/data/mnist && pwd)"
fi
export INITLAB_DATA_DIR="${INITLAB_DATA_DIR:-}"
export XDG_CACHE_HOME="${XDG_CACHE_HOME:-$PWD/.cache}"

python3 -m venv .venv-gpu
. .venv-gpu/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e .
if ! python -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' 2>/dev/null; then
  python -m pip install --quiet "jax[cuda12]"
fi
python - <<'EOF'
import jax, sys
if jax.default_backend() != "gpu":
    sys.exit(f"JAX sees no GPU (backend {jax.default_backend()}, devices {jax.devices()}); stopping")
print("JAX", jax.__version__, "on", jax.devices())
EOF
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true

{ time initlab run configs/quickstart.yaml --out "$OUT/runs" --force; } > "$OUT/quickstart.txt" 2>&1
python benchmarks/run.py --quick --only throughput,stats --out "$OUT" > "$OUT/run.txt" 2>&1
python benchmarks/sweep_batching.py --seeds 16 --out "$OUT" > "$OUT/sweep64.txt" 2>&1

{
  echo "# initlab on $(python -c 'import jax; print(jax.devices()[0].device_kind)')"
  echo
  echo "Measured $(date -u +%F) by \`bash benchmarks/gpu.sh\`."
  echo
  echo "## Quickstart"
  echo
  echo '```'
  cat "$OUT/quickstart.txt"
  echo '```'
  echo
  echo "## benchmarks/run.py --quick --only throughput,stats"
  echo
  cat "$OUT/run.md"
  echo
  echo "## 64 runs: one vmapped group vs one at a time"
  echo
  echo '```'
  tail -3 "$OUT/sweep64.txt"
  echo '```'
} > "$OUT/gpu.md.tmp"
mv "$OUT/gpu.md.tmp" "$OUT/gpu.md"
echo "written: $OUT/gpu.md"
