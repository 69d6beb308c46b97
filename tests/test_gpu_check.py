"""benchmarks/gpu_check.py, the one script that runs every GPU path when a GPU is lent: without a
GPU it stops at once with a clear message instead of failing check by check (its CPU rehearsal,
`--cpu-rehearsal`, takes minutes and is run by hand)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_gpu_check_without_a_gpu_says_so_and_exits_2(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = tmp_path / "gpu.json"
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--out", str(out)], capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no CUDA GPU is visible" in r.stderr and "--cpu-rehearsal" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()
