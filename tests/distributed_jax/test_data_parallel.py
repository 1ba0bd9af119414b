"""Training under `keras.distribution.DataParallel` on JAX: 2 CPU devices, and 2 processes.

`worker.py` trains a tree model, a `LearnToBranch` search and a
`LearnedAllocation` search (2 epochs each) on the same global batches, in
fresh JAX processes started together: one process with two CPU devices,
which trains first without a distribution (on one device: the
reference) and then under `DataParallel`, and two processes of one device
each joined by `keras.distribution.initialize`
on 127.0.0.1 (gloo CPU collectives). Each process writes its losses and
plans; they must match the reference's, and only process 0 may write a
file. Every process has a hard timeout and is killed when it runs past it.
These tests run in any backend's pytest session (the workers use JAX).
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.fresh_process import REPO

jax = pytest.importorskip("jax", reason="JAX is not installed (pip install -e '.[test]')")

pytestmark = pytest.mark.slow

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
_TIMEOUT = 240  # seconds, for every process (a loaded 2-core machine needs ~100)
_RTOL = 1e-4
_RUNS = ("tree", "learn_to_branch", "allocation")


def cpu_collectives_reason():
    """Why this JAX cannot join CPU processes with gloo, or None when it can."""
    try:
        jax.config.jax_cpu_collectives_implementation  # noqa: B018
    except AttributeError:
        return f"JAX {jax.__version__} has no `jax_cpu_collectives_implementation` option"
    from jax._src import lib

    extension = getattr(lib, "_jax", None) or getattr(lib, "xla_extension", None)
    if not hasattr(extension, "make_gloo_tcp_collectives"):
        return f"JAX {jax.__version__} has no gloo CPU collectives"
    return None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(out_dir, *args):
    os.makedirs(out_dir, exist_ok=True)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    env.pop("XLA_FLAGS", None)
    log = open(os.path.join(out_dir, f"log_{len(os.listdir(out_dir))}.txt"), "w")
    process = subprocess.Popen(
        [sys.executable, _WORKER, str(out_dir), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=out_dir,
    )
    return process, log


def _wait(started):
    """Waits for every process (killing those past the timeout); returns failures."""
    failures = []
    for process, log in started:
        try:
            process.wait(timeout=_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            failures.append(f"timed out after {_TIMEOUT}s: {log.name}")
        log.close()
        if process.returncode:
            with open(log.name) as f:
                failures.append(f"{log.name} exited with {process.returncode}:\n{f.read()[-3000:]}")
    return failures


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The records of every run, keyed by run name (and process index)."""
    root = tmp_path_factory.mktemp("distributed_jax")
    started = [_start(root / "two_devices", "--devices", "2", "--reference")]
    pair = cpu_collectives_reason() is None
    if pair:
        port = str(_free_port())
        for index in range(2):
            started.append(
                _start(
                    root / "two_processes",
                    *("--num-processes", "2", "--process-id", str(index), "--port", port),
                )
            )
    failures = _wait(started)
    assert not failures, "\n".join(failures)

    def read(name, index=0):
        with open(root / name / f"process_{index}.json") as f:
            return json.load(f)

    records = {"two_devices": read("two_devices"), "root": root}
    records["reference"] = records["two_devices"]["reference"]
    if pair:
        records["two_processes"] = [read("two_processes", i) for i in range(2)]
    return records


def _assert_same_training(record, reference):
    for name in _RUNS:
        np.testing.assert_allclose(record[name], reference[name], rtol=_RTOL, atol=1e-6)
        assert record[name][-1] < record[name][0], (name, record[name])
    for plan in ("learn_to_branch_plan", "allocation_plan"):
        assert record[plan] == reference[plan], plan


def test_one_process_two_devices_matches_one_device(runs):
    record, reference = runs["two_devices"], runs["reference"]
    assert (record["replicas"], record["num_processes"], record["is_chief"]) == (2, 1, True)
    assert reference is not None and set(_RUNS) <= set(reference)
    _assert_same_training(record, reference)
    # Share routing and affinity branching, on one process with two devices.
    for name in ("share_routing", "affinity"):
        np.testing.assert_allclose(record[name], reference[name], rtol=_RTOL, atol=1e-6)
        assert record[f"{name}_plan"] == reference[f"{name}_plan"], name


def test_two_processes_match_one_process(runs):
    reason = cpu_collectives_reason()
    if reason is not None:
        pytest.skip(f"two processes need CPU collectives: {reason}")
    first, second = runs["two_processes"]
    assert [r["process_index"] for r in (first, second)] == [0, 1]
    assert [r["is_chief"] for r in (first, second)] == [True, False]
    assert first["num_processes"] == second["num_processes"] == 2
    assert first["replicas"] == second["replicas"] == 2
    for record in (first, second):
        _assert_same_training(record, runs["reference"])
    # Every process holds the same plans; only process 0 wrote its plot.
    for plan in ("learn_to_branch_plan", "allocation_plan"):
        assert first[plan] == second[plan]
    written = sorted(os.listdir(runs["root"] / "two_processes"))
    assert "plot_0.png" in written and "plot_1.png" not in written, written
