"""keras-tuner's distributed mode over `BranchingHyperModel` trials, and `TrialWatchdog`.

The end-to-end test runs `examples/distributed_trials.py` (the example of
docs/distributed_trials.md) as a chief and two workers on 127.0.0.1, kills
one worker (SIGKILL) in the middle of a trial, and checks that the search
still ends: every other trial ran exactly once, the killed trial is
FAILED, and the chief printed the best tree. The chief and the killed
worker run on the JAX backend when JAX is installed, the other worker on
TensorFlow: the oracle sees only hyperparameters and scores, and so the one
search covers both backends. The other tests drive `TrialWatchdog` on an
oracle in this process.
"""

import glob
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import keras
import keras_tuner
import pytest

from keras_branching.builder import BranchedModelBuilder
from keras_branching.task import Task
from keras_branching.tree import BranchingTree
from keras_branching.tuning import BranchingHyperModel, TrialWatchdog, watch_trials
from tests.fresh_process import REPO

SCRIPT = os.path.join(REPO, "examples", "distributed_trials.py")
_MAX_TRIALS = 6
_TRIAL_TIMEOUT = 15  # seconds; a trial here takes 1 to 10 s, depending on the load
_DEADLINE = 300  # seconds for the whole search; the test fails, killing all, past it


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tuner_id, port, backend):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERASTUNER_")}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")])),
        KERAS_BACKEND=backend,
        JAX_PLATFORMS="cpu",
        TF_CPP_MIN_LOG_LEVEL="3",
        GRPC_VERBOSITY="ERROR",
    )
    if tuner_id is not None:
        env.update(
            KERASTUNER_TUNER_ID=tuner_id,
            KERASTUNER_ORACLE_IP="127.0.0.1",
            KERASTUNER_ORACLE_PORT=str(port),
        )
    return env


def _wait(process, deadline, name, tmp_path):
    try:
        return process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name} still ran at the deadline; its stderr:\n{_tail(tmp_path, name)}")


def _tail(tmp_path, name):
    with open(tmp_path / f"{name}.err") as f:
        return f.read()[-3000:]


@pytest.mark.slow
def test_chief_and_two_workers_survive_a_killed_worker(tmp_path):
    other = "jax" if importlib.util.find_spec("jax") else "tensorflow"
    runs = tmp_path / "runs"
    runs.mkdir()
    args = [
        sys.executable,
        SCRIPT,
        "--directory",
        str(tmp_path / "search"),
        "--max-trials",
        str(_MAX_TRIALS),
        "--epochs",
        "1",
        "--trial-timeout",
        str(_TRIAL_TIMEOUT),
        "--runs-dir",
        str(runs),
    ]
    port = _free_port()
    processes = {}

    def start(name, tuner_id, backend, extra=()):
        with open(tmp_path / f"{name}.out", "w") as out, open(tmp_path / f"{name}.err", "w") as err:
            processes[name] = subprocess.Popen(
                args + list(extra),
                env=_env(tuner_id, port, backend),
                cwd=tmp_path,
                stdout=out,
                stderr=err,
            )

    deadline = time.monotonic() + _DEADLINE
    try:
        start("chief", "chief", other)
        start("tuner0", "tuner0", "tensorflow")
        start("tuner1", "tuner1", other)
        # tuner1 finishes a trial, then dies in the middle of its second one.
        while len(glob.glob(str(runs / "*.tuner1.*.begin"))) < 2:
            if processes["tuner1"].poll() is not None:
                pytest.fail(
                    "tuner1 ended before its second trial; stderr:\n" + _tail(tmp_path, "tuner1")
                )
            if time.monotonic() > deadline:
                pytest.fail("tuner1 never began a second trial:\n" + _tail(tmp_path, "tuner1"))
            time.sleep(0.02)
        processes["tuner1"].send_signal(signal.SIGKILL)
        killed = max(
            os.path.basename(p).split(".")[0] for p in glob.glob(str(runs / "*.tuner1.*.begin"))
        )
        assert _wait(processes["tuner1"], deadline, "tuner1", tmp_path) == -signal.SIGKILL
        assert _wait(processes["tuner0"], deadline, "tuner0", tmp_path) == 0, _tail(
            tmp_path, "tuner0"
        )
        # The chief serves until its watchdog has ended the dead worker's trial.
        assert _wait(processes["chief"], deadline, "chief", tmp_path) == 0, _tail(tmp_path, "chief")
        # Any process can read the result from the directory afterwards.
        start("report", None, other, ["--report"])
        assert _wait(processes["report"], deadline, "report", tmp_path) == 0, _tail(
            tmp_path, "report"
        )
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()

    chief = json.loads((tmp_path / "chief.out").read_text().strip().splitlines()[-1])
    expected = {f"{i}": "COMPLETED" for i in range(_MAX_TRIALS)}
    expected[killed] = "FAILED"
    assert chief["statuses"] == expected

    # Every trial ran exactly once: one begin, one end, from one process;
    # the killed trial began once (on tuner1) and was not retried.
    begins = sorted(os.path.basename(p) for p in glob.glob(str(runs / "*.begin")))
    ends = sorted(os.path.basename(p) for p in glob.glob(str(runs / "*.end")))
    assert [b.split(".")[0] for b in begins] == sorted(expected), begins
    assert [e.split(".")[0] for e in ends] == sorted(set(expected) - {killed}), ends
    assert {b[: -len(".begin")] for b in begins} - {e[: -len(".end")] for e in ends} == {
        next(b[: -len(".begin")] for b in begins if b.startswith(f"{killed}."))
    }
    assert {b.split(".")[1] for b in begins} == {"tuner0", "tuner1"}
    with open(tmp_path / "search" / "trees" / f"trial_{killed}" / "trial.json") as f:
        message = json.load(f)["message"]
    assert "'tuner1'" in message and f"trial_timeout={_TRIAL_TIMEOUT}" in message

    # The chief reports the best tree, a valid tree over the tasks; so does a reload.
    assert chief["best_trial"] != killed and chief["best_trial"] in expected
    tree = BranchingTree.from_config(chief["tree"])
    assert list(tree.tasks) == ["g0_t0", "g0_t1", "g1_t0", "g1_t1"] and tree.num_blocks == 2
    report = json.loads((tmp_path / "report.out").read_text().strip().splitlines()[-1])
    assert report == chief


# `TrialWatchdog` in this process, on a tuner's oracle.


@pytest.fixture
def tuner(tmp_path):
    builder = BranchedModelBuilder(
        (4,),
        [lambda: keras.layers.Dense(8)],
        [Task(n, lambda: keras.layers.Dense(1), "mse") for n in "ab"],
    )

    def make(**oracle_kwargs):
        tuner = keras_tuner.RandomSearch(
            BranchingHyperModel(builder),
            objective="val_loss",
            max_trials=3,
            seed=0,
            directory=str(tmp_path),
            project_name="p",
            **oracle_kwargs,
        )
        tuner.oracle.verbose = 0
        return tuner

    return make


def test_watchdog_sends_a_stale_trial_for_retry(tuner):
    oracle = tuner(max_retries_per_trial=1).oracle
    trial = oracle.create_trial("tuner1")
    watchdog = TrialWatchdog(oracle, trial_timeout=5)
    assert watchdog.check(now=100.0) == []
    assert watchdog.check(now=104.0) == []
    assert watchdog.check(now=105.5) == [trial.trial_id]
    assert trial.status == "INVALID" and "'tuner1'" in trial.message
    assert oracle.ongoing_trials == {} and oracle.tuner_ids == set()
    # The next worker that asks gets the same trial again.
    assert oracle.create_trial("tuner0").trial_id == trial.trial_id
    assert watchdog.check(now=200.0) == []


def test_watchdog_leaves_trials_that_report_in_time(tuner):
    oracle = tuner().oracle
    trial = oracle.create_trial("tuner0")
    watchdog = TrialWatchdog(oracle, trial_timeout=5)
    assert watchdog.check(now=0.0) == []
    oracle.update_trial(trial.trial_id, {"val_loss": 1.0})
    trial.status = "COMPLETED"
    oracle.end_trial(trial)
    assert watchdog.check(now=100.0) == []
    assert oracle.trials[trial.trial_id].status == "COMPLETED"
    # A new trial for the same worker has its own clock.
    second = oracle.create_trial("tuner0")
    assert watchdog.check(now=101.0) == []
    assert watchdog.check(now=106.5) == [second.trial_id]
    assert oracle.trials[second.trial_id].status == "FAILED"


def test_watch_trials_runs_only_on_the_chief(tuner, monkeypatch):
    search = tuner()
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "1")
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner0")
    assert watch_trials(search, trial_timeout=1) is None
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    trial = search.oracle.create_trial("tuner3")
    watchdog = watch_trials(search, trial_timeout=0.05, interval=0.02)
    try:
        assert isinstance(watchdog, TrialWatchdog)
        end = time.monotonic() + 10
        while search.oracle.ongoing_trials and time.monotonic() < end:
            time.sleep(0.02)
        assert search.oracle.ongoing_trials == {}
        assert trial.status == "FAILED"
    finally:
        watchdog.stop()
    assert watchdog._thread is None


def test_watchdog_rejects_bad_arguments(tuner):
    oracle = tuner().oracle
    with pytest.raises(TypeError, match="Received: oracle='chief'"):
        TrialWatchdog("chief", trial_timeout=1)
    with pytest.raises(ValueError, match="Received: trial_timeout=0"):
        TrialWatchdog(oracle, trial_timeout=0)
    with pytest.raises(ValueError, match="Received: interval=nan"):
        TrialWatchdog(oracle, trial_timeout=1, interval=float("nan"))
    with pytest.raises(ValueError, match="Received: trial_timeout=True"):
        TrialWatchdog(oracle, trial_timeout=True)


def test_page_runs_the_tested_script_with_its_options():
    with open(os.path.join(REPO, "docs", "distributed_trials.md"), encoding="utf-8") as f:
        page = f.read()
    with open(SCRIPT, encoding="utf-8") as f:
        script = f.read()
    assert "python examples/distributed_trials.py" in page
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", page))
    assert flags >= {"--directory", "--report", "--trial-timeout", "--runs-dir"}
    for flag in flags:
        assert f'"{flag}"' in script, flag
    assert "watch_trials(tuner" in script and "watch_trials(tuner" in page
