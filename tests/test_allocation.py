import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_branching.allocation import (
    AllocationBuilder,
    AllocationModel,
    EmptyAllocation,
    task_batches,
    task_model,
)
from keras_branching.datasets.synthetic import synthetic_tasks
from keras_branching.layers.allocation_mask import AllocationMask
from keras_branching.task import Task

NAMES = ["a", "b", "c"]


def _dense(units=6):
    return lambda: keras.layers.Dense(units, activation="relu")


def _tasks(names=NAMES):
    return [Task(n, head=lambda: keras.layers.Dense(1), loss="mse") for n in names]


def _builder(**kwargs):
    layers = [
        [_dense(), _dense(), keras.layers.Identity],
        keras.layers.LayerNormalization,
        [_dense(), _dense()],
    ]
    return AllocationBuilder(inputs=(6,), layers=layers, tasks=_tasks(), **kwargs)


def _data(n=8, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    x = {t: rng.standard_normal((n + i, dim)).astype("float32") for i, t in enumerate(NAMES)}
    y = {t: rng.standard_normal((n + i, 1)).astype("float32") for i, t in enumerate(NAMES)}
    return x, y


def _dataset(x, y, batch_size=4):
    datasets = {t: tf.data.Dataset.from_tensor_slices((x[t], y[t])) for t in NAMES}
    return task_batches(datasets, batch_size, seed=0)


def _set_allocations(model, allocations):
    for index, on in zip((1, 3), allocations):
        logits = np.zeros(on.shape + (2,), "float32")
        logits[..., 0] = np.where(on, 1.0, -1.0)
        model.get_layer(f"layer{index}_allocation").logits.assign(logits)


ALLOCATIONS = [
    np.array([[1, 0, 1], [1, 1, 1], [0, 0, 1]], bool),
    np.array([[1, 0], [0, 0], [1, 1]], bool),  # task b uses nothing in layer 3
]


def test_build_structure_and_allocations():
    builder = _builder()
    model = builder.build()
    assert isinstance(model, AllocationModel)
    assert sorted(model.input) == sorted(model.output) == NAMES
    masks = [layer for layer in model.layers if isinstance(layer, AllocationMask)]
    assert [(m.num_tasks, m.num_components) for m in masks] == [(3, 3), (3, 2)]
    assert builder.num_components == [3, 2] and builder.routed_layers == [0, 2]
    # Initial probability 0.97: every task uses every component.
    assert all(a.all() for a in builder.allocations(model))
    np.testing.assert_array_equal(builder.shared_components(model), np.full((3, 3), 5))
    # One copy of each component, shared by the tasks.
    joint = model.get_layer("layer1_components")
    assert [c.name for c in joint.components] == ["layer1_c1", "layer1_c2", "layer1_c3"]
    assert len(joint.components[0].weights) == 2


def test_export_equals_allocation_network_at_inference(tmp_path):
    builder = _builder()
    model = builder.build()
    _set_allocations(model, ALLOCATIONS)
    x, y = _data()
    model.fit(_dataset(x, y), steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)
    assert [a.tolist() for a in builder.allocations(model)] == [a.tolist() for a in ALLOCATIONS]
    static = builder.export(model)
    assert not isinstance(static, AllocationModel) and isinstance(static, keras.Model)
    names = {layer.name for layer in static.layers}
    assert not any(isinstance(layer, AllocationMask) for layer in static.layers)
    # Component 2 of layer 1 is used by task b only; component 2 of layer 3 by task c only.
    assert {"layer1_c1", "layer1_c2", "layer1_c3", "layer3_c1", "layer3_c2"} <= names
    assert "layer3_empty_b" in names
    batch = {t: x[t][:5] for t in NAMES}
    expected = model.predict(batch, verbose=0)
    exported = static.predict(batch, verbose=0)
    for t in NAMES:
        np.testing.assert_allclose(exported[t], expected[t], rtol=1e-5, atol=1e-6)
    # Task b ignores its input after layer 1 (it uses no component of layer 3).
    shifted = dict(batch, b=batch["b"] + 1.0)
    np.testing.assert_allclose(static.predict(shifted, verbose=0)["b"], exported["b"], atol=1e-6)
    # Each task alone; and the export saves and reloads without custom objects.
    alone = task_model(static, "c")
    np.testing.assert_allclose(alone.predict(batch["c"], verbose=0), expected["c"], atol=1e-5)
    for joint in (model, builder.build_shared()):
        with pytest.raises(ValueError, match="call it on every task's input"):
            task_model(joint, "c")
    path = str(tmp_path / "allocated.keras")
    static.save(path)
    reloaded = keras.models.load_model(path)
    for t in NAMES:
        np.testing.assert_allclose(
            reloaded.predict(batch, verbose=0)[t], exported[t], rtol=1e-6, atol=1e-6
        )


def test_unused_components_are_left_out():
    builder = _builder()
    model = builder.build(compile=False)
    allocations = [
        np.array([[1, 0, 0], [1, 0, 0], [0, 0, 1]], bool),
        np.array([[1, 0], [1, 0], [1, 0]], bool),
    ]
    _set_allocations(model, allocations)
    names = {layer.name for layer in builder.export(model).layers}
    assert "layer1_c2" not in names and "layer3_c2" not in names
    assert {"layer1_c1", "layer1_c3", "layer3_c1"} <= names


def test_training_step_two_learning_rates_and_weight_decay():
    builder = _builder()
    model = builder.build(learning_rate=1e-3, allocation_learning_rate=5e-2, weight_decay=1e-2)
    assert model.optimizer.learning_rate.numpy() == pytest.approx(1e-3)
    assert model.allocation_optimizer.learning_rate.numpy() == pytest.approx(5e-2)
    x, y = _data()
    before_logits = [np.asarray(v).copy() for v in model.allocation_variables]
    bias = model.get_layer("layer1_components").components[0].bias
    before_bias = np.asarray(bias).copy()
    history = model.fit(_dataset(x, y), steps_per_epoch=3, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])
    # Adam moves each variable by about its learning rate per step.
    logit_moves = max(
        np.abs(np.asarray(v) - b).max() for v, b in zip(model.allocation_variables, before_logits)
    )
    bias_moves = np.abs(np.asarray(bias) - before_bias).max()
    assert 3e-2 < logit_moves <= 3 * 5e-2 + 1e-6
    assert 0 < bias_moves <= 3 * 1e-3 + 1e-6
    # Weight decay: kernels and norm scales, but neither biases nor allocation logits.
    decayed = {
        v.path for v in model.trainable_weights if v.name not in ("bias", "allocation_logits")
    }
    assert any(p.endswith("kernel") for p in decayed)
    penalty = float(model.weight_penalty())
    expected = sum(
        float(np.sum(np.square(v))) for v in model.trainable_weights if v.path in decayed
    )
    assert penalty == pytest.approx(1e-2 * 0.5 * 3 * expected, rel=1e-5)


def _one_sgd_step(policy):
    """How far one SGD step moves the weights and the allocation logits."""
    keras.config.set_dtype_policy(policy)  # the conftest fixture resets it
    keras.utils.set_random_seed(0)
    builder = _builder(seed=0)
    model = builder.build(compile=False)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        allocation_optimizer=keras.optimizers.SGD(1.0),
        loss={t: "mse" for t in NAMES},
    )
    kernel = model.get_layer("layer1_components").components[0].kernel
    before = np.asarray(kernel).copy(), [np.asarray(v).copy() for v in model.allocation_variables]
    x, y = _data()
    model.fit(_dataset(x, y), steps_per_epoch=1, epochs=1, verbose=0, shuffle=False)
    weight_move = np.abs(np.asarray(kernel) - before[0]).max()
    logit_move = max(
        np.abs(np.asarray(v) - b).max() for v, b in zip(model.allocation_variables, before[1])
    )
    return weight_move, logit_move


def test_mixed_float16_steps_like_float32():
    """The loss-scaled weights' gradients and the plain allocation gradients keep their size."""
    reference = _one_sgd_step("float32")
    mixed = _one_sgd_step("mixed_float16")
    assert min(reference) > 1e-4
    for ours, theirs in zip(mixed, reference):
        assert theirs / 3 < ours < theirs * 3, (mixed, reference)


def test_temperature_schedule_anneals_the_masks():
    temperature = pytest.importorskip("keras_branching.callbacks.temperature")
    builder = _builder(temperature=50.0)
    model = builder.build()
    schedule = temperature.TemperatureSchedule(
        "inverse_sqrt", initial_temperature=50.0, min_temperature=0.5
    )
    found = temperature.find_temperature_variables(model)
    assert len(found) == 2 and all(isinstance(layer, AllocationMask) for layer, _ in found)
    x, y = _data()
    model.fit(
        _dataset(x, y),
        steps_per_epoch=4,
        epochs=1,
        verbose=0,
        shuffle=False,
        callbacks=[schedule],
    )
    for _, variable in found:
        assert float(variable.numpy()) == pytest.approx(50.0 / 2.0)  # step 3: 50 / sqrt(4)


def test_baselines():
    builder = _builder()
    shared = builder.build_shared()
    independent = builder.build_independent()
    for model in (shared, independent):
        assert not any(isinstance(layer, AllocationMask) for layer in model.layers)
    # Independent: every task has its own copy of everything.
    assert independent.count_params() - 3 * 7 == 3 * (shared.count_params() - 3 * 7)
    x, y = _data()
    for model in (shared, independent):
        history = model.fit(_dataset(x, y), steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)
        assert np.isfinite(history.history["loss"][0])
    # Independent tasks do not affect each other.
    batch = {t: x[t][:4] for t in NAMES}
    out = independent.predict(batch, verbose=0)
    moved = independent.predict(dict(batch, a=batch["a"] + 1.0), verbose=0)
    np.testing.assert_array_equal(out["b"], moved["b"])
    assert not np.allclose(out["a"], moved["a"])


def test_empty_allocation_layer():
    layer = EmptyAllocation((2, 3))
    assert tuple(layer(np.ones((4, 5), "float32")).shape) == (4, 2, 3)
    assert EmptyAllocation.from_config(layer.get_config()).shape == (2, 3)
    with pytest.raises(ValueError, match=r"shape=\(0,\)"):
        EmptyAllocation((0,))


def test_bad_arguments():
    layers = [[_dense(), _dense()]]
    with pytest.raises(TypeError, match="not a layer instance"):
        AllocationBuilder((6,), [[keras.layers.Dense(2)]], _tasks())
    with pytest.raises(ValueError, match="at least one component"):
        AllocationBuilder((6,), [[]], _tasks())
    with pytest.raises(TypeError, match="layers=None"):
        AllocationBuilder((6,), None, _tasks())
    with pytest.raises(ValueError, match=r"initial_probability=1.5"):
        AllocationBuilder((6,), layers, _tasks(), initial_probability=1.5)
    with pytest.raises(ValueError, match="one input shape per task"):
        AllocationBuilder({"a": (6,)}, layers, _tasks())
    with pytest.raises(ValueError, match=r"Received: 'x \(y\)'"):
        AllocationBuilder((6,), layers, _tasks(["x (y)"]))
    with pytest.raises(ValueError, match="unique task names"):
        AllocationBuilder((6,), layers, _tasks(["a", "a"]))
    with pytest.raises(ValueError, match="of one shape"):
        AllocationBuilder((6,), [[_dense(2), _dense(3)]], _tasks()).build()
    builder = AllocationBuilder((6,), layers, _tasks())
    with pytest.raises(ValueError, match=r"allocation 0 of shape \(3, 2\)"):
        builder.build_static([np.ones((2, 2), bool)])
    with pytest.raises(ValueError, match="one allocation matrix per routed layer"):
        builder.build_static([])
    with pytest.raises(ValueError, match="AllocationMask"):
        builder.export(builder.build_shared())
    with pytest.raises(ValueError, match=r"allocation_learning_rate=0"):
        builder.build(allocation_learning_rate=0)
    with pytest.raises(ValueError, match=r"batch_size=0"):
        task_batches({"a": tf.data.Dataset.range(3)}, 0)


def _group_separation(seed, steps=300):
    """Trains on 2 groups of 2 synthetic tasks; within-group minus across-group sharing.

    One routed layer of 6 linear one-unit components: a component shared by
    tasks of different groups has to mix their directions, which hurts both.
    """
    keras.utils.set_random_seed(seed)
    x, y, groups = synthetic_tasks(2, 2, 2000, input_dim=8, seed=seed)
    names = [t for g in groups for t in g]
    builder = AllocationBuilder(
        (8,),
        [[lambda: keras.layers.Dense(1)] * 6],
        [Task(n, head=lambda: keras.layers.Dense(1), loss="mse") for n in names],
        initial_probability=0.9,
        seed=seed,
    )
    model = builder.build(learning_rate=1e-2, allocation_learning_rate=2e-2, weight_decay=0.0)
    data = {n: tf.data.Dataset.from_tensor_slices((x, y[n])) for n in names}
    model.fit(task_batches(data, 64, seed=seed), steps_per_epoch=steps, verbose=0, shuffle=False)
    shared = builder.shared_components(model)
    within = (shared[0, 1] + shared[2, 3]) / 2
    across = (shared[0, 2] + shared[0, 3] + shared[1, 2] + shared[1, 3]) / 4
    return within - across


@pytest.mark.slow
def test_learned_allocation_recovers_groups():
    gaps = [_group_separation(seed) for seed in range(5)]
    assert sum(gap > 0 for gap in gaps) >= 4, gaps


def test_plot_shows_probabilities_of_a_network_or_given_allocations():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    builder = _builder()
    model = builder.build()
    _set_allocations(model, ALLOCATIONS)
    fig = builder.plot(model)
    layer1, layer3 = fig.axes[:2]
    assert layer1.get_title() == "layer 1\n3/3 used" and layer3.get_title() == "layer 3\n2/2 used"
    assert [t.get_text() for t in layer3.get_xticklabels()] == ["c1", "c2"]
    assert [t.get_text() for t in layer1.get_yticklabels()] == NAMES
    probabilities = model.get_layer("layer1_allocation").probabilities()
    np.testing.assert_allclose(builder.probabilities(model)[0], probabilities)
    assert [p.shape for p in builder.probabilities(model)] == [(3, 3), (3, 2)]
    np.testing.assert_allclose(layer1.images[0].get_array(), probabilities)
    assert len(layer3.collections[0].get_offsets()) == ALLOCATIONS[1].sum()
    plt.close(fig)

    fig = builder.plot(ALLOCATIONS, components=[["p", "q", "r"], ["s", "t"]])
    np.testing.assert_array_equal(fig.axes[1].images[0].get_array(), ALLOCATIONS[1])
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["s", "t"]
    plt.close(fig)
    with pytest.raises(ValueError, match="one allocation matrix per routed layer"):
        builder.plot(ALLOCATIONS[:1])
