import keras
import numpy as np
import pytest

from keras_branching.allocation import Allocation, AllocationBuilder
from keras_branching.datasets.missing import mask_missing
from keras_branching.layers.allocation_mask import AllocationMask
from keras_branching.layers.empty_allocation import EmptyAllocation
from tests.allocation.helpers import ALLOCATION, NAMES, builder, data, dense, shared_data, tasks


def test_structure_and_names():
    b = builder()
    assert b.routed_layers == [0, 2] and b.num_components == [3, 2]
    model = b.build(ALLOCATION)
    assert sorted(model.input) == sorted(model.output) == NAMES
    names = {layer.name for layer in model.layers}
    # Each used component once (shared by its tasks), an empty allocation for task b.
    assert {"layer1_c1", "layer1_c2", "layer1_c3", "layer2", "layer3_c1", "layer3_c2"} <= names
    assert {"layer1_mean_a", "layer3_mean_c", "layer3_empty_b", "head_a"} <= names
    assert not any(isinstance(layer, AllocationMask) for layer in model.layers)
    assert isinstance(model.get_layer("layer3_empty_b"), EmptyAllocation)
    x, _ = data()
    batch = {t: x[t][:4] for t in NAMES}
    out = model.predict(batch, verbose=0)
    # Task b uses no component of layer 3: its output ignores its input.
    moved = model.predict(dict(batch, b=batch["b"] + 1.0), verbose=0)
    np.testing.assert_allclose(moved["b"], out["b"], atol=1e-6)


def test_unused_components_are_left_out():
    plan = Allocation(NAMES, [[[1, 0, 0], [1, 0, 0], [0, 0, 1]], [[1, 0], [1, 0], [1, 0]]])
    names = {layer.name for layer in builder().build(plan).layers}
    assert "layer1_c2" not in names and "layer3_c2" not in names
    assert {"layer1_c1", "layer1_c3", "layer3_c1"} <= names


@pytest.mark.parametrize(
    "which", ["given", "shared", "independent", "nothing", "independent_partial"]
)
def test_count_params_without_building(which):
    b = builder()
    plans = {
        "given": ALLOCATION,
        "shared": b.shared_allocation(),
        "independent": b.independent_allocation(),
        "nothing": Allocation(NAMES, [np.zeros((3, 3), bool), np.zeros((3, 2), bool)]),
        "independent_partial": Allocation(NAMES, ALLOCATION.layers, independent=True),
    }
    plan = plans[which]
    assert b.count_params(plan) == b.build(plan, compile=False).count_params()


def test_baselines():
    b = builder()
    shared = b.build(b.shared_allocation())
    independent = b.build(b.independent_allocation())
    heads = 3 * 7
    assert independent.count_params() - heads == 3 * (shared.count_params() - heads)
    x, y = shared_data()
    for model in (shared, independent):
        history = model.fit(x=dict.fromkeys(NAMES, x), y=y, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
    # Independent tasks do not affect each other.
    batch = dict.fromkeys(NAMES, x[:4])
    out = independent.predict(batch, verbose=0)
    moved = independent.predict(dict(batch, a=batch["a"] + 1.0), verbose=0)
    np.testing.assert_array_equal(out["b"], moved["b"])
    assert not np.allclose(out["a"], moved["a"])


def test_any_task_name_the_tree_builder_accepts():
    names = ["Anglo-Saxon_Futhorc", "v1.2"]
    b = AllocationBuilder(dict.fromkeys(names, (4,)), [[dense(), dense()]], tasks(names))
    assert b.input_names == {t: t for t in names}
    model = b.build(b.shared_allocation())
    assert {"head_Anglo-Saxon_Futhorc", "head_v1.2"} <= {layer.name for layer in model.layers}
    assert sorted(model.output) == sorted(names)
    assert b.count_params(b.shared_allocation()) == model.count_params()
    x = np.ones((8, 4), "float32")
    history = model.fit(dict.fromkeys(names, x), {t: np.zeros((8, 1)) for t in names}, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_masked_labels_do_not_count_in_metrics():
    b = AllocationBuilder((4,), [[dense(), dense()]], tasks(["a", "b"], metrics=["mae"]))
    model = b.build(b.shared_allocation(), optimizer=keras.optimizers.SGD(0.0))
    x = np.ones((8, 4), "float32")
    y = {"a": np.zeros((8, 1), "float32"), "b": np.zeros((8, 1), "float32")}
    y["b"][:4] = np.nan
    y["b"][4:] = 5.0
    x, y, weights = mask_missing(x, y)
    masked = model.evaluate(x, y, sample_weight=weights, verbose=0, return_dict=True)
    labelled = model.evaluate(x[4:], {t: v[4:] for t, v in y.items()}, verbose=0, return_dict=True)
    # Only the 4 labelled examples of task b count in its metric.
    assert masked["b_mae"] == pytest.approx(labelled["b_mae"], rel=1e-5)


def test_one_input_for_every_task():
    b = builder(per_task=False)
    assert not b.per_task_inputs
    shared = b.build(b.shared_allocation())
    assert not isinstance(shared.input, dict)
    # Tasks that read one tensor share each layer's node: a plain shared network.
    assert len(shared.get_layer("layer1_c1")._inbound_nodes) == 1
    assert len(shared.get_layer("layer2")._inbound_nodes) == 1
    assert b.count_params(b.shared_allocation()) == shared.count_params()
    model = b.build(ALLOCATION)
    assert b.count_params(ALLOCATION) == model.count_params()
    x, y = shared_data()
    history = shared.fit(x, y, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    per_task = builder()
    per_task_model = per_task.build(ALLOCATION)
    per_task_model.set_weights(model.get_weights())
    out = model.predict(x[:4], verbose=0)
    expected = per_task_model.predict(dict.fromkeys(NAMES, x[:4]), verbose=0)
    for t in NAMES:
        np.testing.assert_allclose(out[t], expected[t], rtol=1e-5, atol=1e-6)


def test_compile_uses_the_builders_optimizer():
    b = builder(optimizer=keras.optimizers.Adam(1e-4))
    model = b.build(b.shared_allocation())
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(1e-4)
    assert model.optimizer is not b.optimizer


def test_bad_arguments():
    layers = [[dense(), dense()]]
    with pytest.raises(TypeError, match="not a layer instance"):
        AllocationBuilder((6,), [[keras.layers.Dense(2)]], tasks())
    with pytest.raises(ValueError, match="at least one component"):
        AllocationBuilder((6,), [[]], tasks())
    with pytest.raises(TypeError, match="layers=None"):
        AllocationBuilder((6,), None, tasks())
    with pytest.raises(TypeError, match="inputs="):
        AllocationBuilder("x", layers, tasks())
    with pytest.raises(ValueError, match="one input shape per task"):
        AllocationBuilder({"a": (6,)}, layers, tasks())
    with pytest.raises(ValueError, match="unique task names"):
        AllocationBuilder((6,), layers, tasks(["a", "a"]))
    with pytest.raises(TypeError, match="return a Keras layer"):
        b = AllocationBuilder((6,), [[lambda: "x"]], tasks())
        b.build(b.shared_allocation())
    with pytest.raises(ValueError, match="of one shape"):
        b = AllocationBuilder((6,), [[dense(2), dense(3)]], tasks())
        b.build(b.shared_allocation())
    b = AllocationBuilder((6,), layers, tasks())
    with pytest.raises(ValueError, match=r"with \[2\] components"):
        b.build(Allocation(NAMES, [np.ones((3, 3), bool)]))
    with pytest.raises(ValueError, match="differ from the builder's"):
        b.build(Allocation(["a", "b", "d"], [np.ones((3, 2), bool)]))
    with pytest.raises(TypeError, match="Expected an `Allocation`"):
        b.count_params([np.ones((3, 2), bool)])
