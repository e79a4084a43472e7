"""Smoke runs of the CPU benchmarks at a tiny size, so that they keep working.

Their timings mean nothing here; the benchmarks are run by hand at full size
(see the README). `tests/test_gpu_benchmark.py` covers `benchmarks/gpu.py`.
"""

import os
import pathlib
import subprocess
import sys

import keras
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(script, *args):
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_head_benchmark_reports_every_head_and_goal():
    out = _run("head.py", "--quick")
    for head in ("plain", "tied", "untied", "floor", "naive"):
        assert f"\n{head} " in out
    for ratio in ("tied/floor", "naive/tied", "untied/naive"):
        assert ratio in out


def test_mnrl_benchmark_runs_all_variants():
    out = _run("mnrl.py", "--batch", "8", "--dim", "32", "--dims", "8", "16",
               "32", "--repeats", "2")
    assert "fused" in out and "sliced" in out


@pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="the digits models train slowly on torch's eager loop",
)
def test_spectrum_benchmark_fits_both_heads():
    out = _run("spectrum.py", "--splits", "1", "--epochs", "2")
    assert "MRL head, mean over 1 splits: decay" in out
    assert "plain head, mean over 1 splits: decay" in out


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="numpy and faiss only; one backend is enough",
)
def test_funnel_benchmark_quick():
    out = _run("funnel.py", "--quick", "--repeats", "1")
    assert "overlap" in out.lower()
