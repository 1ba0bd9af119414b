import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_branching.layers.gated_route import GatedRoute
from keras_branching.routing.builder import RoutingModelBuilder
from keras_branching.routing.plan import RoutingPlan
from keras_branching.task import Task

FIRST = (["input"], "input")


def _builder(num_layers=2, tasks=("a", "b")):
    return RoutingModelBuilder(
        inputs=(6,),
        experts=[lambda: keras.layers.Dense(4, activation="relu")] * num_layers,
        tasks=[Task(t, head=lambda: keras.layers.Dense(1), loss="mse") for t in tasks],
    )


def _plan():
    return RoutingPlan(
        ["a", "b"],
        layers=[[FIRST] * 3, [([0, 1], "input"), ([1, 2], 0), ([2], "input")]],
        towers={"a": ([0], "input"), "b": ([0, 1], 1)},
    )


def test_builds_used_sub_networks_and_gates():
    model = _builder().build(_plan())
    names = {layer.name for layer in model.layers}
    assert {"expert_1_0", "expert_1_1", "expert_1_2", "expert_2_0", "expert_2_1"} <= names
    assert "expert_2_2" not in names  # no tower depends on it
    gates = {layer.name: layer for layer in model.layers if isinstance(layer, GatedRoute)}
    assert sorted(gates) == ["gate_2_0", "gate_2_1", "gate_b"]
    assert gates["gate_2_1"].kernel.shape == (4, 2)  # queried by expert 0 of layer 1
    assert gates["gate_2_0"].kernel.shape == (6, 2)  # queried by the input


def test_mmoe_and_shared_bottom_sizes():
    builder = _builder(num_layers=1)
    # Shared bottom: one Dense(6->4), two Dense(4->1) towers, no gate.
    assert builder.count_params(RoutingPlan.shared_bottom(["a", "b"])) == 28 + 2 * 5
    # MMoE with 3 experts: 3 experts, 2 gates of 6x3 + 3, 2 towers.
    assert builder.count_params(RoutingPlan.mmoe(["a", "b"], 3)) == 3 * 28 + 2 * 21 + 2 * 5


def test_model_matches_hand_computation():
    builder = _builder(num_layers=1)
    model = builder.build(RoutingPlan.mmoe(["a", "b"], 2), compile=False)
    x = np.random.default_rng(0).standard_normal((3, 6)).astype("float32")
    experts = [model.get_layer(f"expert_1_{m}")(x) for m in range(2)]
    gate = model.get_layer("gate_a")
    mixed = gate([x, *experts])
    expected = model.get_layer("head_a")(mixed)
    np.testing.assert_allclose(model(x)["a"], expected, rtol=1e-5)


def test_fit_and_saved_model_export(tmp_path):
    builder = _builder()
    model = builder.build(_plan())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 6)).astype("float32")
    y = {t: rng.standard_normal((32, 1)).astype("float32") for t in "ab"}
    model.fit(x, y, epochs=1, verbose=0)
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "plan.keras")
    reloaded = keras.models.load_model(tmp_path / "plan.keras")
    for t in "ab":
        np.testing.assert_allclose(reloaded.predict(x, verbose=0)[t], expected[t], rtol=1e-6)
    model.export(str(tmp_path / "served"), format="tf_saved_model", verbose=False)
    served = tf.saved_model.load(str(tmp_path / "served"))
    out = served.serve(x)
    for t in "ab":
        np.testing.assert_allclose(np.asarray(out[t]), expected[t], rtol=1e-5, atol=1e-6)
    # Nothing of the search: every variable belongs to an expert, gate or head.
    names = [v.path for v in model.variables]
    assert all(n.split("/")[0].startswith(("expert_", "gate_", "head_")) for n in names), names


def test_rejects_plan_with_other_tasks():
    plan = RoutingPlan.shared_bottom(["a", "c"], num_layers=2)
    with pytest.raises(ValueError, match=r"plan's tasks \['a', 'c'\] differ .* \['a', 'b'\]"):
        _builder().build(plan)


def test_rejects_plan_with_other_depth():
    with pytest.raises(ValueError, match="plan has 1 layers but the builder has 2"):
        _builder().build(RoutingPlan.shared_bottom(["a", "b"]))


def test_rejects_non_plan():
    with pytest.raises(TypeError, match="Expected a `RoutingPlan`"):
        _builder().build("shared")


def test_count_params_equals_the_built_model_without_building_it(monkeypatch):
    builder = RoutingModelBuilder(
        inputs=(6,),
        experts=[lambda: keras.layers.Dense(4, activation="relu"), lambda: keras.layers.Dense(3)],
        tasks=[Task(t, head=lambda: keras.layers.Dense(2), loss="mse") for t in ("a", "b", "c")],
    )
    plans = [_plan_over(("a", "b", "c"), seed) for seed in range(6)]
    plans.append(RoutingPlan.shared_bottom(["a", "b", "c"], num_layers=2))
    built = [builder.build(plan, compile=False).count_params() for plan in plans]

    def no_build(*args, **kwargs):
        raise AssertionError("count_params built a model")

    monkeypatch.setattr(keras, "Model", no_build)
    assert [builder.count_params(plan) for plan in plans] == built


def _plan_over(tasks, seed, width=3):
    rng = np.random.default_rng(seed)

    def spec():
        route = sorted(rng.choice(width, size=rng.integers(1, width + 1), replace=False).tolist())
        query = "input" if rng.random() < 0.5 else int(rng.integers(width))
        return route, query

    return RoutingPlan(
        list(tasks),
        layers=[[FIRST] * width, [spec() for _ in range(width)]],
        towers={t: spec() for t in tasks},
    )


def test_layer_names_come_from_naming():
    from keras_branching import naming

    model = _builder().build(_plan(), compile=False)
    names = {layer.name for layer in model.layers}
    assert naming.expert_name(1, 1) in names
    assert naming.gate_name(1, 1) in names
    assert naming.tower_gate_name("b") in names
    assert naming.head_name("a") in names


def test_build_passes_compile_kwargs():
    model = _builder().build(_plan(), steps_per_execution=2)
    assert model.steps_per_execution == 2
