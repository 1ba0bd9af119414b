import numpy as np
import pytest

from keras_branching.datasets import synthetic_tasks


def test_shapes_names_and_groups():
    x, y, groups = synthetic_tasks(3, 2, 50, input_dim=10, seed=1)
    assert x.shape == (50, 10) and x.dtype == np.float32
    assert groups == [["g0_t0", "g0_t1"], ["g1_t0", "g1_t1"], ["g2_t0", "g2_t1"]]
    assert list(y) == [t for g in groups for t in g]
    assert all(v.shape == (50, 1) and v.dtype == np.float32 for v in y.values())


def test_same_seed_same_data():
    a = synthetic_tasks(2, 2, 20, seed=3)
    b = synthetic_tasks(2, 2, 20, seed=3)
    c = synthetic_tasks(2, 2, 20, seed=4)
    np.testing.assert_array_equal(a[0], b[0])
    for name in a[1]:
        np.testing.assert_array_equal(a[1][name], b[1][name])
    assert not np.array_equal(a[0], c[0])


def _correlations(relatedness):
    _, y, _ = synthetic_tasks(2, 2, 20000, input_dim=20, relatedness=relatedness, seed=0)
    corr = np.corrcoef(np.hstack([y[t] for t in ("g0_t0", "g0_t1", "g1_t0")]).T)
    return corr[0, 1], corr[0, 2]  # same group, different groups


def test_groups_are_related_inside_and_unrelated_across():
    inside, across = _correlations(0.9)
    assert inside > 0.3
    assert abs(across) < 0.05
    # The sine terms make targets less correlated than their weights, but
    # relatedness still orders them.
    assert _correlations(0.5)[0] < inside


def test_relatedness_zero_makes_tasks_of_a_group_unrelated():
    _, y, _ = synthetic_tasks(1, 2, 20000, input_dim=20, relatedness=0.0, seed=0)
    assert abs(np.corrcoef(y["g0_t0"].T, y["g0_t1"].T)[0, 1]) < 0.05


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_groups": 0}, "num_groups=0"),
        ({"input_dim": 3}, "input_dim=3"),
        ({"relatedness": 1.5}, "relatedness=1.5"),
        ({"noise": -1.0}, "noise=-1.0"),
        ({"num_examples": 2.5}, "num_examples=2.5"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    args = {"num_groups": 2, "tasks_per_group": 2, "num_examples": 10}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        synthetic_tasks(**args)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"seed": -1}, "seed=-1"),
        ({"seed": None}, "seed=None"),
        ({"seed": 1.5}, "seed=1.5"),
        ({"noise": float("inf")}, "noise=inf"),
        ({"noise": float("nan")}, "noise=nan"),
        ({"relatedness": float("nan")}, "relatedness=nan"),
        ({"relatedness": True}, "relatedness=True"),
    ],
)
def test_rejects_bad_seed_and_non_finite_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic_tasks(2, 2, 10, **kwargs)


def test_three_groups_of_two_for_the_benchmark():
    x, y, groups = synthetic_tasks(3, 2, 30, input_dim=16, seed=0)
    assert [len(g) for g in groups] == [2, 2, 2] and len(y) == 6
    again = synthetic_tasks(3, 2, 30, input_dim=16, seed=0)
    np.testing.assert_array_equal(x, again[0])
    for task in y:
        np.testing.assert_array_equal(y[task], again[1][task])
