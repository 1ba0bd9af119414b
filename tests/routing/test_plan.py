import json

import pytest

from keras_branching.routing.plan import RoutingPlan

FIRST = (["input"], "input")


def _plan(**overrides):
    args = dict(
        tasks=["a", "b"],
        layers=[[FIRST] * 3, [([0, 1], "input"), ([1], "input"), ([2], 0)]],
        towers={"a": ([0], "input"), "b": ([1, 0], 1)},
    )
    args.update(overrides)
    return RoutingPlan(**args)


def test_json_round_trip_and_equality():
    plan = _plan()
    again = RoutingPlan.from_json(plan.to_json())
    assert again == plan and hash(again) == hash(plan)
    assert json.loads(plan.to_json())["towers"]["b"] == {"route": [0, 1], "query": 1}


def test_route_order_does_not_matter_but_queries_do():
    assert _plan() == _plan(towers={"a": ([0], "input"), "b": ([0, 1], 1)})
    assert _plan() != _plan(towers={"a": ([0], "input"), "b": ([0, 1], "input")})


def test_accepts_dict_specs():
    plan = _plan()
    assert RoutingPlan(**plan.to_config()) == plan


def test_used_by_follows_routes_and_queries():
    plan = _plan()
    assert plan.widths == (3, 3)
    assert plan.used_by("a") == {(1, 0), (0, 0), (0, 1)}
    assert plan.used_by("b") == {(1, 0), (1, 1), (0, 0), (0, 1)}
    assert (0, 2) not in plan.used_experts() and (1, 2) not in plan.used_experts()


def test_drawing_is_readable():
    text = repr(_plan())
    assert "layer 2:" in text
    assert "e2.0 <- gate[input](e1.0 + e1.1)" in text
    assert "b <- gate[e2.1](e2.0 + e2.1)" in text
    assert "unused: e1.2 e2.2" in text


def test_shared_bottom():
    plan = RoutingPlan.shared_bottom(["a", "b"], num_layers=2)
    assert plan.widths == (1, 1)
    assert plan.tower("a") == ((0,), "input") and plan.route(1, 0) == ((0,), "input")


def test_mmoe():
    plan = RoutingPlan.mmoe(["a", "b"], num_experts=3)
    assert plan.widths == (3,)
    assert all(plan.tower(t) == ((0, 1, 2), "input") for t in "ab")


@pytest.mark.parametrize("bad", [0, -1])
def test_mmoe_rejects_bad_num_experts(bad):
    with pytest.raises(ValueError, match=f"num_experts={bad}"):
        RoutingPlan.mmoe(["a"], bad)


def test_rejects_empty_route():
    with pytest.raises(ValueError, match=r"non-empty route for expert 0 of layer 2.*route=\[\]"):
        _plan(layers=[[FIRST] * 3, [([], "input")]], towers={"a": ([0], 0), "b": ([0], 0)})


def test_rejects_empty_tower_route():
    with pytest.raises(ValueError, match="non-empty route for the tower of task 'b'"):
        _plan(towers={"a": ([0], "input"), "b": ([], "input")})


def test_rejects_route_to_missing_sub_network():
    with pytest.raises(ValueError, match=r"names sub-network 5, but layer 1 has 3"):
        _plan(layers=[[FIRST] * 3, [([0, 5], "input")]], towers={"a": ([0], 0), "b": ([0], 0)})


def test_rejects_tower_route_to_missing_sub_network():
    with pytest.raises(ValueError, match=r"task 'a' names sub-network 3, but the last layer"):
        _plan(towers={"a": ([3], "input"), "b": ([0], "input")})


def test_rejects_missing_query():
    with pytest.raises(ValueError, match=r"gate query .* Received: query=7"):
        _plan(towers={"a": ([0, 1], 7), "b": ([0], "input")})


def test_rejects_repeated_member():
    with pytest.raises(ValueError, match="each sub-network once"):
        _plan(towers={"a": ([0, 0], "input"), "b": ([0], "input")})


def test_rejects_first_layer_route():
    with pytest.raises(ValueError, match="first layer read the input"):
        _plan(layers=[[([0], "input")]], towers={"a": ([0], "input"), "b": ([0], "input")})


def test_rejects_towers_for_other_tasks():
    with pytest.raises(ValueError, match=r"one tower per task \['a', 'b'\]"):
        _plan(towers={"a": ([0], "input"), "c": ([0], "input")})


def test_rejects_empty_layer():
    with pytest.raises(ValueError, match="at least one sub-network in layer 2"):
        _plan(layers=[[FIRST], []])


def test_rejects_non_int_member():
    with pytest.raises(TypeError, match="indices"):
        _plan(towers={"a": (["x"], "input"), "b": ([0], "input")})


def test_from_config_rejects_wrong_keys():
    with pytest.raises(ValueError, match="keys 'tasks', 'layers' and 'towers'"):
        RoutingPlan.from_config({"tasks": ["a"]})
