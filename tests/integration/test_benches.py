"""The benchmarks still run: a tiny configuration of each, end to end (timings are not checked)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_serve_mixed_runs_every_arm_and_prints_the_ratios():
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "serve_mixed.py"), "--requests", "6", "--max-tokens", "3",
         "--adapters", "3", "--batch", "6", "--hidden", "64", "--layers", "2", "--repeats", "1", "--threads", "1"],
        capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    for arm in ("mixed", "merged", "reads", "swapping"):
        rate = re.search(rf"^{arm}\s+([\d.]+)", out.stdout, re.M)
        assert rate and float(rate.group(1)) > 0, (arm, out.stdout)
    for ratio in ("mixed / merged", "reads / merged", "mixed / reads", "mixed / swapping"):
        assert re.search(rf"^{ratio}\s+=\s+[\d.]+x", out.stdout, re.M), (ratio, out.stdout)
