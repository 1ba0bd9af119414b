import keras
import numpy as np
import pytest

from keras_branching.allocation import (
    build_routed_network,
    export_allocation_network,
    read_allocation,
    task_model,
)
from keras_branching.layers.allocation_mask import AllocationMask
from keras_branching.layers.joint_components import JointComponents
from tests.allocation.helpers import ALLOCATION, NAMES, builder, data, set_allocation


def _routed(b):
    model = build_routed_network(b, seeds=[0, 1])
    set_allocation(model, ALLOCATION)
    return model


def test_routed_network_structure():
    b = builder()
    model = build_routed_network(b)
    assert sorted(model.input) == sorted(model.output) == NAMES
    masks = [layer for layer in model.layers if isinstance(layer, AllocationMask)]
    assert [(m.num_tasks, m.num_components) for m in masks] == [(3, 3), (3, 2)]
    joint = model.get_layer("layer1_components")
    assert [c.name for c in joint.components] == ["layer1_c1", "layer1_c2", "layer1_c3"]
    assert isinstance(model.get_layer("layer2_joint"), JointComponents)
    # Initial probability 0.97: every task uses every component.
    assert read_allocation(model, NAMES) == b.shared_allocation()


def test_export_equals_the_routed_network_at_inference(tmp_path):
    b = builder()
    model = _routed(b)
    b.compile(model)
    x, y = data()
    same = {t: v[:8] for t, v in x.items()}, {t: v[:8] for t, v in y.items()}
    model.fit(*same, epochs=1, batch_size=4, verbose=0)
    assert read_allocation(model, NAMES) == ALLOCATION
    static = export_allocation_network(b, model)
    names = {layer.name for layer in static.layers}
    assert not any(isinstance(layer, (AllocationMask, JointComponents)) for layer in static.layers)
    assert {"layer1_c1", "layer1_c2", "layer1_c3", "layer3_c1", "layer3_c2"} <= names
    assert "layer3_empty_b" in names
    batch = {t: x[t][:5] for t in NAMES}
    expected = model.predict(batch, verbose=0)
    exported = static.predict(batch, verbose=0)
    for t in NAMES:
        np.testing.assert_allclose(exported[t], expected[t], rtol=1e-5, atol=1e-6)
    # Each task alone; and the export saves and reloads without custom objects.
    alone = task_model(static, "c")
    assert alone.name == "task_c"
    np.testing.assert_allclose(alone.predict(batch["c"], verbose=0), expected["c"], atol=1e-5)
    with pytest.raises(ValueError, match="call it on every task's input"):
        task_model(model, "c")
    with pytest.raises(ValueError, match="holding task 'd'"):
        task_model(static, "d")
    path = str(tmp_path / "allocated.keras")
    static.save(path)
    reloaded = keras.models.load_model(path)
    for t in NAMES:
        np.testing.assert_allclose(
            reloaded.predict(batch, verbose=0)[t], exported[t], rtol=1e-6, atol=1e-6
        )


def test_a_reloaded_routed_network_exports_and_keeps_its_temperature(tmp_path):
    b = builder()
    model = _routed(b)
    for mask in [layer for layer in model.layers if isinstance(layer, AllocationMask)]:
        mask.temperature_variable.assign(3.0)
    path = str(tmp_path / "routed.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert read_allocation(reloaded, NAMES) == ALLOCATION
    masks = [layer for layer in reloaded.layers if isinstance(layer, AllocationMask)]
    assert [float(keras.ops.convert_to_numpy(m.temperature_variable)) for m in masks] == [3.0] * 2
    x, _ = data()
    batch = {t: x[t][:3] for t in NAMES}
    static = export_allocation_network(b, reloaded)
    for t in NAMES:
        np.testing.assert_allclose(
            static.predict(batch, verbose=0)[t],
            model.predict(batch, verbose=0)[t],
            rtol=1e-5,
            atol=1e-6,
        )


def test_export_needs_a_routed_network():
    b = builder()
    with pytest.raises(ValueError, match="AllocationMask"):
        export_allocation_network(b, b.build(b.shared_allocation()))
