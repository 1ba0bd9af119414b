"""The check every search method passes (style.md), like keras-hub's `run_backbone_test`.

`run_search_test(make_search, x, y, tmp_path)` runs a search as a user would:
through `fit` with user callbacks, on arrays and on a `tf.data` pipeline;
checks the `SearchResult` (plan type, history, JSON round trip, `build`,
`count_params`, `summary`); trains, saves and reloads the built model; and
interrupts a search in the middle of an epoch, resumes it with
`keras.callbacks.BackupAndRestore`, and compares with an uninterrupted run.
"""

import os

import keras
import numpy as np

from keras_branching.search import SearchResult


class _Interrupt(Exception):
    pass


class _InterruptAt(keras.callbacks.Callback):
    """Raises in the middle of epoch `epoch` (0-based)."""

    def __init__(self, epoch, batch=1):
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch:
            raise _Interrupt(f"interrupted in epoch {self.epoch + 1}")


class _Recorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs, self.batches = [], 0

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


def _head(data, n):
    return keras.tree.map_structure(lambda a: a[:n], data)


def _dataset(x, y, batch_size):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


def check_result(result, builder, plan_class, epochs, x, y, tmp_path):
    """The result's plan, history, JSON, build, size, and a trained, reloaded model."""
    assert isinstance(result, SearchResult)
    assert isinstance(result.plan, plan_class), type(result.plan)
    assert result.history, "empty history"
    assert all(len(v) == epochs for v in result.history.values()), result.history
    assert result.method and result.method in result.summary()

    again = SearchResult.from_json(result.to_json())
    assert again.plan == result.plan
    assert again.history == result.history
    assert again.settings == result.settings

    model = again.build(builder=builder)
    assert model.count_params() == builder.count_params(result.plan)
    assert result.count_params() == model.count_params()
    model.fit(_head(x, 32), _head(y, 32), epochs=1, verbose=0)
    sample = _head(x, 8)
    before = model.predict(sample, verbose=0)
    path = os.path.join(str(tmp_path), "searched.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    after = reloaded.predict(sample, verbose=0)
    for a, b in zip(keras.tree.flatten(before), keras.tree.flatten(after)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    return model


def run_search_test(
    make_search,
    x,
    y,
    tmp_path,
    plan_class,
    epochs=3,
    batch_size=32,
    validation_data=None,
    check_resume_equal=True,
    check_dataset=True,
):
    """Runs every search check.

    Args:
        make_search: zero-argument callable returning a fresh search with a
            fixed seed (each call must give the same search).
        x, y: training data as arrays (`y` a dict keyed by task).
        tmp_path: a temporary directory.
        plan_class: the class of the plan the search must return.
        epochs, batch_size, validation_data: for `search`.
        check_resume_equal: whether the resumed plan must equal an
            uninterrupted run's (required for learning to branch and
            allocation).
        check_dataset: whether to run the search on a `tf.data` pipeline too.
    """
    common = dict(validation_data=validation_data, batch_size=batch_size, shuffle=False)

    # Through fit, with the user's callbacks.
    recorder = _Recorder()
    search = make_search()
    result = search.search(x, y, epochs=epochs, callbacks=[recorder], verbose=0, **common)
    assert recorder.epochs == list(range(epochs))
    assert recorder.batches > 0
    check_result(result, search.builder, plan_class, epochs, x, y, tmp_path)

    # Resume: interrupted in the middle of the second epoch, then run again.
    backup_dir = os.path.join(str(tmp_path), "backup")
    interrupted = make_search()
    try:
        interrupted.search(
            x,
            y,
            epochs=epochs,
            callbacks=[keras.callbacks.BackupAndRestore(backup_dir), _InterruptAt(1)],
            verbose=0,
            **common,
        )
    except _Interrupt:
        pass
    else:
        raise AssertionError("the interrupting callback did not stop the search")
    resumed_recorder = _Recorder()
    resumed = make_search().search(
        x,
        y,
        epochs=epochs,
        callbacks=[keras.callbacks.BackupAndRestore(backup_dir), resumed_recorder],
        verbose=0,
        **common,
    )
    assert resumed_recorder.epochs == list(range(1, epochs)), resumed_recorder.epochs
    assert all(len(v) == epochs for v in resumed.history.values()), resumed.history
    assert isinstance(resumed.plan, plan_class)
    if check_resume_equal:
        assert resumed.plan == result.plan, (resumed.plan, result.plan)
        for key in result.history:
            np.testing.assert_allclose(resumed.history[key], result.history[key], rtol=1e-4)

    # A tf.data pipeline of (x, y_dict).
    if check_dataset and keras.backend.backend() == "tensorflow":
        data = _dataset(x, y, batch_size)
        from_dataset = make_search().search(data, epochs=1, verbose=0, shuffle=False)
        assert isinstance(from_dataset.plan, plan_class)
    return result
