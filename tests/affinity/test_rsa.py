import numpy as np
import pytest
from scipy import stats

from keras_branching.affinity.rsa import TaskAffinity, rdm, rsa_affinity


def test_rdm_is_one_minus_pearson():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(6, 4, 3))
    expected = 1.0 - np.corrcoef(features.reshape(6, -1))
    np.testing.assert_allclose(rdm(features), expected, atol=1e-12)
    assert rdm(features).shape == (6, 6)


def test_rdm_constant_vector_has_dissimilarity_one():
    features = np.array([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0], [3.0, 1.0, 2.0]])
    matrix = rdm(features)
    assert matrix[0, 0] == 0.0
    np.testing.assert_allclose(matrix[0, 1:], 1.0)


@pytest.mark.parametrize(
    "features, message",
    [
        (np.zeros((2, 3)), "at least K=3"),
        (np.zeros(5), "shape \\(K, ...\\)"),
        (np.array([[0.0, np.nan], [1.0, 2.0], [3.0, 1.0]]), "NaN"),
    ],
)
def test_rdm_rejects_bad_features(features, message):
    with pytest.raises(ValueError, match=message):
        rdm(features)


def test_identical_representations_have_affinity_one():
    rng = np.random.default_rng(0)
    shared = rng.normal(size=(40, 10))
    affinity = rsa_affinity({"a": [shared, shared[:, :5]], "b": [shared, shared[:, :5]]})
    np.testing.assert_allclose(affinity.values, 1.0)
    np.testing.assert_allclose(affinity.dissimilarity, 0.0, atol=1e-12)


def test_affinity_is_invariant_to_scale_and_shift_of_features():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(30, 8))
    affinity = rsa_affinity({"a": [f], "b": [3.0 * f - 2.0]})
    assert affinity.values[0, 0, 1] == pytest.approx(1.0)


def test_independent_noise_has_affinity_near_zero():
    rng = np.random.default_rng(2)
    features = {name: [rng.normal(size=(200, 16))] for name in "abcd"}
    affinity = rsa_affinity(features)
    off_diagonal = affinity.values[0][~np.eye(4, dtype=bool)]
    assert np.abs(off_diagonal).max() < 0.1
    np.testing.assert_allclose(np.diag(affinity.values[0]), 1.0)


def test_affinity_orders_related_tasks_first():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(100, 12))
    affinity = rsa_affinity(
        {
            "a": [base],
            "b": [base + 0.3 * rng.normal(size=base.shape)],
            "c": [rng.normal(size=base.shape)],
        }
    )
    values = affinity.values[0]
    assert values[0, 1] > 0.5 > values[0, 2]
    np.testing.assert_allclose(values, values.T)


def test_affinity_matches_scipy_spearman():
    rng = np.random.default_rng(4)
    fa, fb = rng.normal(size=(20, 5)), rng.normal(size=(20, 5))
    affinity = rsa_affinity({"a": [fa], "b": [np.round(fb, 1)]})
    upper = np.triu_indices(20, k=1)
    expected = stats.spearmanr(rdm(fa)[upper], rdm(np.round(fb, 1))[upper]).statistic
    assert affinity.values[0, 0, 1] == pytest.approx(expected, abs=1e-12)


def test_rsa_affinity_rejects_different_numbers_of_inputs():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="same K inputs"):
        rsa_affinity({"a": [rng.normal(size=(10, 3))], "b": [rng.normal(size=(12, 3))]})


def test_rsa_affinity_rejects_different_numbers_of_branch_points():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(10, 3))
    with pytest.raises(ValueError, match="same number of branch points"):
        rsa_affinity({"a": [f, f], "b": [f]})


def test_rsa_affinity_rejects_nan_features():
    rng = np.random.default_rng(0)
    bad = rng.normal(size=(10, 3))
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        rsa_affinity({"a": [rng.normal(size=(10, 3))], "b": [bad]})


def test_rsa_affinity_rejects_constant_features():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="task 'b' at branch point 0"):
        rsa_affinity({"a": [rng.normal(size=(10, 3))], "b": [np.ones((10, 3))]})


@pytest.mark.parametrize("features", [[np.zeros((3, 3))], {"a": np.zeros((3, 3))}])
def test_rsa_affinity_rejects_wrong_structure(features):
    with pytest.raises(TypeError):
        rsa_affinity(features)


def test_task_affinity_validation():
    with pytest.raises(ValueError, match="shape"):
        TaskAffinity(["a", "b"], np.ones((1, 3, 3)))
    with pytest.raises(ValueError, match="symmetric"):
        TaskAffinity(["a", "b"], np.array([[[1.0, 0.2], [0.5, 1.0]]]))
    with pytest.raises(ValueError, match="finite"):
        TaskAffinity(["a", "b"], np.array([[[1.0, np.nan], [np.nan, 1.0]]]))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        TaskAffinity(["a", "b"], np.array([[[1.0, 2.0], [2.0, 1.0]]]))
    with pytest.raises(ValueError, match="unique"):
        TaskAffinity(["a", "a"], np.ones((1, 2, 2)))


def test_task_affinity_config_round_trip_and_repr():
    affinity = TaskAffinity(["a", "b"], np.array([[[1.0, 0.25], [0.25, 1.0]]] * 2))
    assert TaskAffinity.from_config(affinity.to_config()) == affinity
    assert "branch point 2" in repr(affinity)
    assert "0.25" in affinity.format(0)
    with pytest.raises(ValueError, match="branch_point"):
        affinity.format(2)
    with pytest.raises(ValueError):
        affinity.values[0, 0, 0] = 3.0  # read-only


def test_plot_draws_one_heat_map_per_branch_point():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    affinity = TaskAffinity(["a", "b", "c"], np.eye(3)[None].repeat(3, axis=0))
    figure = affinity.plot()
    images = [ax for ax in figure.axes if ax.images]
    assert len(images) == 3
    plt.close(figure)
