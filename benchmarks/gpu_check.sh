#!/usr/bin/env bash
# The checks that need a GPU, in one run (about 5 minutes on one H200): the no-sync tests, the DataParallel memory test
# (skipped with a single GPU), and the fusion and trainer benchmarks on CUDA. Run from the repository root on a machine
# with CUDA and the dev install (pip install -e ".[dev]" with a CUDA torch). Without CUDA the tests skip and the
# benchmarks are not run.
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
python - <<'PY' || { echo "no CUDA: the GPU tests skip, nothing to benchmark"; python -m pytest -q tests/test_gpu.py tests/test_parallel.py; exit 0; }
import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)
PY
nvidia-smi --query-gpu=name,memory.total --format=csv || true
echo "== no host sync in a training step (set_sync_debug_mode('error')), DataParallel memory (2+ GPUs)"
python -m pytest -q -rs -s tests/test_gpu.py tests/test_parallel.py
echo "== fused heads vs hand-fused (CUDA)"
python benchmarks/bench_fusion.py --device cuda --steps 50 --rounds 5 --foreach
echo "== Trainer vs bare loop (CUDA)"
python benchmarks/bench_trainer.py --device cuda --train 4096 --valid 1024 --rounds 3 --threads 4
