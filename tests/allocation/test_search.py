import keras
import numpy as np
import pytest

from keras_branching.allocation import (
    Allocation,
    AllocationBuilder,
    LearnedAllocation,
    routed_masks,
)
from keras_branching.datasets.batches import task_batches
from keras_branching.datasets.synthetic import synthetic_tasks
from keras_branching.layers.allocation_mask import AllocationMask
from keras_branching.task import Task
from tests.allocation.helpers import NAMES, builder, data, shared_data
from tests.fresh_process import run_python
from tests.search_checks import run_search_test


class _Epochs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)


def test_search_with_one_input_for_every_task():
    b = builder()
    x, y = shared_data()
    counter = _Epochs()
    search = LearnedAllocation(b, seed=0)
    result = search.search(
        x, y, validation_data=(x, y), epochs=2, batch_size=8, verbose=0, callbacks=[counter]
    )
    assert counter.epochs == [0, 1]
    assert isinstance(result.plan, Allocation) and result.plan.tasks == tuple(NAMES)
    assert result.plan.num_components == (3, 2)
    assert result.method == "LearnedAllocation"
    assert len(result.history["loss"]) == len(result.history["val_loss"]) == 2
    # 4 steps per epoch, inverse-sqrt from 50: the last step (7) has 50 / sqrt(8).
    assert result.history["temperature"][-1] == pytest.approx(50 / np.sqrt(8), rel=1e-6)
    assert result.details["temperature"] == pytest.approx(50 / np.sqrt(8), rel=1e-6)
    probabilities = [np.asarray(p) for p in result.details["probabilities"]]
    assert [p.shape for p in probabilities] == [(3, 3), (3, 2)]
    assert result.plan == Allocation(NAMES, [p >= 0.5 for p in probabilities])
    assert result.settings["initial_temperature"] == 50.0 and result.settings["seed"] == 0

    model = result.build()
    history = model.fit(dict.fromkeys(NAMES, x), y, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    # A builder with one input for every task: its models take `x` itself.
    one = builder(per_task=False)
    result = LearnedAllocation(one, seed=0).search(x, y, epochs=1, batch_size=8, verbose=0)
    history = result.build().fit(x, y, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_search_with_per_task_inputs(tmp_path):
    import tensorflow as tf

    x, y = data(n=12)
    # Each task its own examples, of different lengths: one batch of every task per step.
    train = task_batches(
        {t: tf.data.Dataset.from_tensor_slices((x[t], y[t])) for t in NAMES}, 4, seed=0
    )
    validation = task_batches(
        {t: tf.data.Dataset.from_tensor_slices((x[t], y[t])) for t in NAMES}, 4, repeat=False
    )
    result = LearnedAllocation(builder(), seed=1).search(
        train, validation_data=validation, epochs=2, steps_per_epoch=3, verbose=0, shuffle=False
    )
    assert len(result.history["val_loss"]) == 2
    # One input dataset for every task is replicated the same way.
    shared_x, shared_y = shared_data(n=16)
    dataset = tf.data.Dataset.from_tensor_slices((shared_x, shared_y)).batch(4)
    result = LearnedAllocation(builder(), seed=1).search(
        dataset, epochs=1, verbose=0, shuffle=False
    )
    assert result.plan.num_components == (3, 2)


class _Record(keras.callbacks.Callback):
    """Keeps every trainable weight before training."""

    def on_train_begin(self, logs=None):
        self.before = {v.path: np.asarray(v).copy() for v in self.model.trainable_weights}


def _moves(model, record):
    masks = {id(m.logits) for m in routed_masks(model)}
    logits = max(
        np.abs(np.asarray(v) - record.before[v.path]).max()
        for v in model.trainable_weights
        if id(v) in masks
    )
    weights = max(
        np.abs(np.asarray(v) - record.before[v.path]).max()
        for v in model.trainable_weights
        if id(v) not in masks
    )
    return weights, logits


def test_two_learning_rates_and_weight_decay():
    b = builder(optimizer=keras.optimizers.Adam(1e-3))
    search = LearnedAllocation(b, allocation_learning_rate=5e-2, weight_decay=1e-2, seed=0)
    record = _Record()
    x, y = shared_data(n=24)
    search.search(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[record])
    model = search.model
    # Adam moves each variable by at most about its learning rate per step (3 steps).
    weights, logits = _moves(model, record)
    assert 3e-2 < logits <= 1.1 * 3 * 5e-2
    assert 0 < weights <= 1.1 * 3 * 1e-3
    # Weight decay: kernels and norm scales, but neither biases nor allocation logits.
    decayed = [v for v in model.trainable_weights if v.regularizer is not None]
    assert any(v.name == "kernel" for v in decayed) and any(v.name == "gamma" for v in decayed)
    assert not any(v.name in ("bias", "allocation_logits") for v in decayed)
    penalty = float(sum(keras.ops.convert_to_numpy(loss) for loss in model.losses))
    expected = sum(float(np.sum(np.square(np.asarray(v)))) for v in decayed)
    assert penalty == pytest.approx(1e-2 * 0.5 * 3 * expected, rel=1e-5)
    assert not any(
        v.regularizer
        for v in LearnedAllocation(b, weight_decay=0).build_search_model().trainable_weights
    )


def _sgd_steps(policy):
    """How far four SGD steps move the weights and the allocation logits.

    Several, because dynamic loss scaling may skip a first step that
    overflows (it does on JAX).
    """
    keras.config.set_dtype_policy(policy)  # the conftest fixture resets it
    b = builder(optimizer=keras.optimizers.SGD(0.1))
    record = _Record()
    search = LearnedAllocation(b, allocation_learning_rate=1.0, weight_decay=0.0, seed=0)
    x, y = shared_data(n=32)
    search.search(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[record])
    return _moves(search.model, record)


def test_mixed_float16_steps_like_float32():
    """The loss-scaled weights' gradients and the allocation gradients keep their size."""
    reference = _sgd_steps("float32")
    mixed = _sgd_steps("mixed_float16")
    assert min(reference) > 1e-4
    for ours, theirs in zip(mixed, reference):
        assert theirs / 3 < ours < theirs * 3, (mixed, reference)


def test_search_check(tmp_path):
    """Through fit with callbacks, JSON, build, reload, tf.data, and resume mid-epoch 2 of 3."""
    x, y = data(n=32)
    x, y = {t: v[:32] for t, v in x.items()}, {t: v[:32] for t, v in y.items()}

    def make_search():
        return LearnedAllocation(
            builder(), initial_temperature=5.0, allocation_learning_rate=0.2, seed=3
        )

    result = run_search_test(make_search, x, y, tmp_path, Allocation, epochs=3, batch_size=8)
    # The history compared with the resumed run's holds the annealed temperature.
    expected = [5 / np.sqrt(s) for s in (4, 8, 12)]
    assert result.history["temperature"] == pytest.approx(expected)


def test_bad_arguments():
    b = builder()
    with pytest.raises(ValueError, match=r"initial_probability=1.5"):
        LearnedAllocation(b, initial_probability=1.5)
    with pytest.raises(ValueError, match=r"allocation_learning_rate=0"):
        LearnedAllocation(b, allocation_learning_rate=0)
    with pytest.raises(ValueError, match=r"weight_decay=-1"):
        LearnedAllocation(b, weight_decay=-1)
    with pytest.raises(ValueError, match="min_temperature"):
        LearnedAllocation(b, initial_temperature=1.0, min_temperature=2.0)
    with pytest.raises(ValueError, match="schedule"):
        LearnedAllocation(b, temperature_schedule="cosine")
    with pytest.raises(TypeError, match="AllocationBuilder"):
        LearnedAllocation("builder")
    with pytest.raises(TypeError, match="seed"):
        LearnedAllocation(b, seed=1.5)


def test_masks_follow_the_settings():
    search = LearnedAllocation(builder(), initial_probability=0.8, budget=0.5, seed=7)
    model = search.build_search_model()
    masks = [layer for layer in model.layers if isinstance(layer, AllocationMask)]
    assert [(m.seed, m.budget) for m in masks] == [(7, 0.5), (8, 0.5)]
    np.testing.assert_allclose(masks[0].probabilities(), 0.8, rtol=1e-6)


def _group_separation(seed, epochs=10):
    """Trains on 2 groups of 2 synthetic tasks; within-group minus across-group sharing.

    One routed layer of 6 linear one-unit components: a component shared by
    tasks of different groups has to mix their directions, which hurts both.
    """
    x, y, groups = synthetic_tasks(2, 2, 2000, input_dim=8, seed=seed)
    names = [t for g in groups for t in g]
    builder = AllocationBuilder(
        (8,),  # one input for every task
        [[lambda: keras.layers.Dense(1)] * 6],
        [Task(n, head=lambda: keras.layers.Dense(1), loss="mse") for n in names],
        optimizer=keras.optimizers.Adam(1e-2),
    )
    search = LearnedAllocation(
        builder,
        initial_probability=0.9,
        initial_temperature=1.0,
        min_temperature=1.0,
        allocation_learning_rate=2e-2,
        weight_decay=0.0,
        seed=seed,
    )
    result = search.search(x, y, epochs=epochs, batch_size=64, verbose=0)
    shared = result.plan.shared_components()
    within = (shared[0, 1] + shared[2, 3]) / 2
    across = (shared[0, 2] + shared[0, 3] + shared[1, 2] + shared[1, 3]) / 4
    return within - across


@pytest.mark.slow
def test_learned_allocation_recovers_groups():
    gaps = [_group_separation(seed) for seed in range(5)]
    assert sum(gap > 0 for gap in gaps) >= 4, gaps


_JAX_SCRIPT = """
import keras
import numpy as np
from tests.allocation.helpers import NAMES, builder, shared_data
from keras_branching.allocation import LearnedAllocation, export_allocation_network
from keras_branching.search import SearchResult

assert keras.backend.backend() == "jax"
x, y = shared_data()
b = builder(optimizer=keras.optimizers.Adam(1e-3))
search = LearnedAllocation(b, allocation_learning_rate=0.05, seed=0)
result = search.search(x, y, epochs=2, batch_size=8, verbose=0)
before = [np.asarray(m) for m in result.details["probabilities"]]
assert not np.allclose(before[0], 0.97), before
static = export_allocation_network(b, search.model)
batch = dict.fromkeys(NAMES, x[:4])
for t in NAMES:
    np.testing.assert_allclose(static.predict(batch, verbose=0)[t],
                               search.model.predict(batch, verbose=0)[t], atol=1e-5)
model = SearchResult.from_json(result.to_json()).build(builder=b)
model.fit(dict.fromkeys(NAMES, x), y, epochs=1, verbose=0)
print("ok", len(result.history["loss"]))
"""


@pytest.mark.skipif(keras.backend.backend() == "jax", reason="runs JAX in a fresh process")
def test_search_on_jax_in_a_fresh_process(tmp_path):
    script = tmp_path / "jax_search.py"
    script.write_text(_JAX_SCRIPT)
    assert run_python(script, cwd=tmp_path, backend="jax").strip().endswith("ok 2")
