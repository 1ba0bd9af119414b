import json

import numpy as np
import pytest

from keras_branching.allocation import Allocation
from keras_branching.search import SearchResult


def test_validation_and_properties():
    plan = Allocation(["a", "b"], [np.array([[True, False], [True, True]]), [[1, 1, 0], [0, 0, 0]]])
    assert plan.tasks == ("a", "b") and plan.num_layers == 2 and plan.num_components == (2, 3)
    assert plan.components("b", 0) == (0, 1) and plan.components("b", 1) == ()
    assert all(m.dtype == bool and not m.flags.writeable for m in plan.layers)
    np.testing.assert_array_equal(plan.shared_components(), [[3, 1], [1, 2]])
    with pytest.raises(TypeError, match="dtype float64"):
        Allocation(["a"], [[[0.5, 1.0]]])
    with pytest.raises(TypeError, match="booleans"):
        Allocation(["a"], [[[2, 1]]])
    with pytest.raises(ValueError, match=r"shape \(2, C\).*Received shape \(1, 2\)"):
        Allocation(["a", "b"], [[[1, 0]]])
    with pytest.raises(ValueError, match="at least one routed layer"):
        Allocation(["a"], [])
    with pytest.raises(TypeError, match="layers="):
        Allocation(["a"], np.ones((1, 2), bool))
    with pytest.raises(ValueError, match="unique task names"):
        Allocation(["a", "a"], [[[1], [1]]])
    with pytest.raises(TypeError, match="task names"):
        Allocation("ab", [[[1], [1]]])
    with pytest.raises(TypeError, match="independent=1"):
        Allocation(["a"], [[[1]]], independent=1)


def test_equality_config_and_json():
    plan = Allocation(["a", "b"], [[[1, 0], [1, 1]]])
    assert plan == Allocation(["a", "b"], [np.array([[True, False], [True, True]])])
    assert hash(plan) == hash(Allocation(["a", "b"], [[[1, 0], [1, 1]]]))
    assert plan != Allocation(["a", "b"], [[[1, 1], [1, 1]]])
    assert plan != Allocation(["b", "a"], [[[1, 0], [1, 1]]])
    assert plan != Allocation(["a", "b"], [[[1, 0], [1, 1]]], independent=True)
    assert Allocation.from_config(json.loads(json.dumps(plan.to_config()))) == plan
    assert Allocation.from_json(plan.to_json()) == plan
    with pytest.raises(ValueError, match="keys 'tasks', 'layers'"):
        Allocation.from_config({"tasks": ["a"]})
    result = SearchResult.from_json(SearchResult(plan, {"loss": [1.0]}).to_json())
    assert result.plan == plan


def test_special_cases_and_repr():
    shared = Allocation.shared(["a", "b"], [2, 1])
    assert all(m.all() for m in shared.layers) and not shared.independent
    np.testing.assert_array_equal(shared.shared_components(), [[3, 3], [3, 3]])
    independent = Allocation.independent_of(["a", "b"], [2, 1])
    assert independent.independent and independent != shared
    np.testing.assert_array_equal(independent.shared_components(), [[3, 0], [0, 3]])
    assert repr(Allocation(["long", "b"], [[[1, 0], [0, 1]]])) == "\n".join(
        [
            "Allocation(2 tasks, 1 routed layer)",
            "  layer 1  c1 c2",
            "  long     #  .",
            "  b        .  #",
        ]
    )
    assert "independent copies" in repr(independent)


def test_plot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plan = Allocation(["a", "b"], [[[1, 0, 1], [0, 1, 1]], [[1, 0], [0, 0]]])
    fig = plan.plot()
    first, second = fig.axes[:2]
    assert [t.get_text() for t in second.get_xticklabels()] == ["c1", "c2"]
    assert [t.get_text() for t in first.get_yticklabels()] == ["a", "b"]
    np.testing.assert_array_equal(second.images[0].get_array(), plan.layers[1])
    plt.close(fig)
    probabilities = [np.full((2, 3), 0.25), np.full((2, 2), 0.75)]
    fig = plan.plot(probabilities=probabilities, components=[["p", "q", "r"], ["s", "t"]])
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), probabilities[0])
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["s", "t"]
    plt.close(fig)
