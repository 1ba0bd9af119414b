"""Interrupted and reloaded work: no stale plan, and an allocation network resumes exactly.

(a) A search object whose second search fails (interrupted, or stopped by
bad data) holds no plan: `result` is None and no attribute keeps the first
search's plan, so nothing can build it by mistake.

(b) The routed network `LearnedAllocation` trains, stopped after an epoch
and resumed, either reloaded from the `.keras` file it was saved to or
through `keras.callbacks.BackupAndRestore`, ends where an uninterrupted
run ends: same optimizer step and so the same temperature, the same
optimizer state, the same weights and the same plan.
"""

import os

import keras
import numpy as np
import pytest

import keras_branching as kb
from keras_branching.allocation.search import read_allocation, routed_masks
from tests.fresh_process import run_python
from tests.reliability.test_divergence import METHODS, _problem, _search


class _Stop(Exception):
    pass


class _StopAt(keras.callbacks.Callback):
    """Raises `_Stop` after batch `batch` of epoch `epoch` (0-based)."""

    def __init__(self, epoch=0, batch=0):
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch:
            raise _Stop(f"stopped in epoch {epoch_name(self.epoch)}")


def epoch_name(epoch):
    return epoch + 1


def _holds_no_plan(search, plan):
    """No attribute of `search` is a plan of `plan`'s class (or the result)."""
    held = {k: v for k, v in vars(search).items() if isinstance(v, (type(plan), kb.SearchResult))}
    assert not held, held
    assert search.result is None


@pytest.mark.parametrize("method", METHODS)
def test_a_failed_second_search_holds_no_stale_plan(method):
    x, y = _problem()
    search = _search(method, y)
    first = search.search(x, y, epochs=1, batch_size=80, verbose=0)
    assert search.result is first
    with pytest.raises(_Stop):
        search.search(x, y, epochs=1, batch_size=80, callbacks=[_StopAt()], verbose=0)
    _holds_no_plan(search, first.plan)
    assert search.model is not None  # the interrupted run's model, for inspection


@pytest.mark.parametrize("method", METHODS)
def test_a_second_search_stopped_by_bad_data_holds_no_stale_plan(method):
    x, y = _problem()
    search = _search(method, y)
    first = search.search(x, y, epochs=1, batch_size=80, verbose=0)
    with pytest.raises(ValueError, match="g1_t0"):
        search.search(x, {"g0_t0": y["g0_t0"]}, epochs=1, verbose=0)
    _holds_no_plan(search, first.plan)


# (b) The allocation network.


def _allocation_search():
    x, y = _problem()
    return _search("allocation", y), x, y


def _state(model):
    """Weights, optimizer variables, step and temperatures of a routed network."""
    masks = routed_masks(model)
    return {
        "weights": [np.asarray(keras.ops.convert_to_numpy(v)) for v in model.weights],
        "optimizer": [
            np.asarray(keras.ops.convert_to_numpy(v), dtype="float64")
            for v in model.optimizer.variables
        ],
        "step": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        "temperatures": [float(keras.ops.convert_to_numpy(m.temperature_variable)) for m in masks],
        "noise": [keras.ops.convert_to_numpy(m.seed_generator.state).tolist() for m in masks],
    }


def _assert_same_state(resumed, straight):
    assert resumed["step"] == straight["step"]
    assert resumed["temperatures"] == straight["temperatures"]
    assert resumed["noise"] == straight["noise"]
    assert len(resumed["weights"]) == len(straight["weights"])
    for a, b in zip(resumed["weights"], straight["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert len(resumed["optimizer"]) == len(straight["optimizer"])
    for a, b in zip(resumed["optimizer"], straight["optimizer"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


class _SaveAndStop(keras.callbacks.Callback):
    def __init__(self, path, epoch):
        super().__init__()
        self.path, self.epoch = path, epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.save(self.path)
            raise _Stop("saved")


def test_allocation_network_reloaded_from_keras_resumes_exactly(tmp_path):
    common = dict(epochs=3, batch_size=32, shuffle=False, verbose=0)
    search, x, y = _allocation_search()
    straight = search.search(x, y, **common)
    expected = _state(search.model)

    path = str(tmp_path / "allocation.keras")
    stopped, _, _ = _allocation_search()
    with pytest.raises(_Stop):
        stopped.search(x, y, callbacks=[_SaveAndStop(path, epoch=0)], **common)
    model = keras.models.load_model(path)
    at_stop = _state(model)
    assert at_stop["step"] == 5  # one epoch of 160 / 32 batches
    # The temperature of the last step taken: 50 / sqrt(4 + 1).
    np.testing.assert_allclose(at_stop["temperatures"], [50 / np.sqrt(5)] * 2, rtol=1e-6)
    assert model.losses  # the weight decay is saved with the layers

    # Continue as the search would: its data layout and its callbacks.
    x_fit, y_fit, _ = stopped.prepare_data(x, y, None)
    model.fit(x_fit, y_fit, initial_epoch=1, callbacks=stopped.search_callbacks(model), **common)
    _assert_same_state(_state(model), expected)
    assert read_allocation(model, stopped.builder.task_names) == straight.plan


def test_allocation_search_resumed_with_backup_and_restore_matches_uninterrupted(tmp_path):
    common = dict(epochs=3, batch_size=32, shuffle=False, verbose=0)
    search, x, y = _allocation_search()
    straight = search.search(x, y, **common)
    expected = _state(search.model)

    backup = os.path.join(str(tmp_path), "backup")
    stopped, _, _ = _allocation_search()
    with pytest.raises(_Stop):
        stopped.search(
            x, y, callbacks=[keras.callbacks.BackupAndRestore(backup), _StopAt(1, 2)], **common
        )
    assert stopped.result is None
    resumed_search, _, _ = _allocation_search()
    resumed = resumed_search.search(
        x, y, callbacks=[keras.callbacks.BackupAndRestore(backup)], **common
    )
    _assert_same_state(_state(resumed_search.model), expected)
    assert resumed.plan == straight.plan
    assert resumed.details["temperature"] == straight.details["temperature"]
    np.testing.assert_allclose(resumed.history["loss"], straight.history["loss"], rtol=1e-5)


JAX_SCRIPT = """
import numpy as np
import keras
import pytest
from tests.reliability import test_interruption as t

assert keras.backend.backend() == "jax"
t.test_allocation_network_reloaded_from_keras_resumes_exactly(__import__("pathlib").Path("."))
print("resumed exactly")
"""


def test_allocation_reload_resumes_exactly_on_jax(tmp_path):
    script = tmp_path / "resume_jax.py"
    script.write_text(JAX_SCRIPT)
    assert "resumed exactly" in run_python(script, cwd=tmp_path, backend="jax")
