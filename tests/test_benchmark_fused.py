"""Smoke test of `benchmarks/fused_copies.py --quick` (no timing is asserted)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_fused_benchmark_writes_markdown_and_json(tmp_path):
    pytest.importorskip("jax", reason="JAX is not installed (pip install -e '.[test]')")
    out = tmp_path / "results"
    completed = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "fused_copies.py"),
            "--quick",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow"),
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    results = json.loads((out / "fused_copies.json").read_text())
    rows = results["rows"]
    assert results["quick"] is True
    assert [(r["case"], r["backend"]) for r in rows] == [
        ("quick_independent_4x2xDense8", "tensorflow"),
        ("quick_supernet_4_2-4", "tensorflow"),
        ("quick_independent_4x2xDense8", "jax"),
    ]
    assert all(r["separate_ms"] > 0 and r["fused_ms"] > 0 and r["speedup"] > 0 for r in rows)
    table = (out / "fused_copies.md").read_text()
    assert "| case | backend | jit_compile |" in table and "quick_supernet_4_2-4" in table
    assert "speed-up" in completed.stderr  # the progress lines
