"""Runs a Python script in a fresh process: for what TensorFlow allows only at start-up.

Splitting the CPU into logical devices must happen before TensorFlow runs
its first op, so tests that need it run their code in a new interpreter.
"""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(script, cwd, timeout=500, backend="tensorflow"):
    """Runs `script` (a path) with the repository importable; returns its stdout.

    The given Keras backend (`"tensorflow"` or `"jax"`, JAX on the CPU),
    quiet TensorFlow logs; fails the calling test, with the end of the
    script's stderr, unless the script exits with 0.
    """
    if backend == "jax":
        pytest.importorskip("jax", reason="JAX is not installed (pip install -e '.[test]')")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND=backend)
    if backend == "jax":
        env.setdefault("JAX_PLATFORMS", "cpu")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    process = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )
    assert process.returncode == 0, process.stderr[-5000:]
    return process.stdout
