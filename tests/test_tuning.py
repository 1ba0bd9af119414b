import keras
import keras_tuner
import numpy as np
import pytest

from keras_branching.affinity.rsa import TaskAffinity
from keras_branching.builder import BranchedModelBuilder
from keras_branching.datasets.synthetic import synthetic_tasks
from keras_branching.task import Task
from keras_branching.tree import BranchingTree
from keras_branching.tuning import BranchingHyperModel
from keras_branching.weighting.model import WeightedModel
from keras_branching.weighting.uncertainty import UncertaintyWeighting


def _builder(names, blocks=None, input_dim=16):
    return BranchedModelBuilder(
        inputs=(input_dim,),
        blocks=blocks or [lambda: keras.layers.Dense(16, activation="relu")] * 2,
        tasks=[Task(n, head=lambda: keras.layers.Dense(1), loss="mse") for n in names],
    )


@pytest.fixture(scope="module")
def data():
    x, y, groups = synthetic_tasks(2, 2, 128, input_dim=16, seed=0)
    return x, y, groups


def _hp(**values):
    hp = keras_tuner.HyperParameters()
    hp.values.update(values)
    return hp


def _check_search(tuner, hypermodel, builder):
    trials = tuner.oracle.trials.values()
    assert len(trials) == 3
    assert all(t.status == "COMPLETED" for t in trials)
    assert all(np.isfinite(t.score) for t in trials)
    best = tuner.get_best_hyperparameters()[0]
    builder.check_tree(hypermodel.tree(best))
    assert 1e-4 <= best.get("learning_rate") <= 1e-2


@pytest.mark.slow
def test_random_search_over_group_counts(data, tmp_path):
    x, y, groups = data
    builder = _builder(list(y))
    hypermodel = BranchingHyperModel(builder)
    tuner = keras_tuner.RandomSearch(
        hypermodel,
        objective="val_loss",
        max_trials=3,
        seed=0,
        directory=str(tmp_path),
        project_name="random",
    )
    tuner.search(x, y, validation_split=0.25, batch_size=32, epochs=1, verbose=0)
    _check_search(tuner, hypermodel, builder)
    values = [t.hyperparameters.values for t in tuner.oracle.trials.values()]
    assert all(set(v) == {"groups_block1", "groups_block2", "learning_rate"} for v in values)


@pytest.mark.slow
def test_bayesian_search_over_candidate_trees_and_weightings(data, tmp_path):
    x, y, groups = data
    builder = _builder(list(y))
    candidates = [
        builder.shared_tree(),
        builder.independent_tree(),
        BranchingTree(list(y), [[sum(groups, [])], groups]),
    ]
    hypermodel = BranchingHyperModel(
        builder,
        trees=candidates,
        weightings={"fixed": None, "uncertainty": UncertaintyWeighting},
    )
    tuner = keras_tuner.BayesianOptimization(
        hypermodel,
        objective="val_loss",
        max_trials=3,
        num_initial_points=2,
        seed=0,
        directory=str(tmp_path),
        project_name="bayes",
    )
    tuner.search(x, y, validation_split=0.25, batch_size=32, epochs=1, verbose=0)
    _check_search(tuner, hypermodel, builder)
    assert hypermodel.tree(tuner.get_best_hyperparameters()[0]) in candidates


def test_group_counts_cut_the_dissimilarity_clustering():
    builder = _builder(["a", "b", "c", "d"], blocks=[lambda: keras.layers.Dense(4)] * 3)
    far = np.array([[0, 1, 0.1, 1], [1, 0, 1, 0.2], [0.1, 1, 0, 1], [1, 0.2, 1, 0]])
    hypermodel = BranchingHyperModel(builder, dissimilarity=far)
    tree = hypermodel.tree(_hp(groups_block1=1, groups_block2=2, groups_block3=3))
    assert tree.groups(0) == [("a", "b", "c", "d")]
    assert tree.groups(1) == [("a", "c"), ("b", "d")]
    assert tree.groups(2) == [("a", "c"), ("b",), ("d",)]
    # Counts never fall from one block to the next: the running maximum.
    tree = hypermodel.tree(_hp(groups_block1=2, groups_block2=1, groups_block3=4))
    assert [len(tree.groups(b)) for b in range(3)] == [2, 2, 4]
    # Without a dissimilarity the groups are contiguous in the builder's order.
    tree = BranchingHyperModel(builder).tree(_hp(groups_block1=2, groups_block2=2, groups_block3=2))
    assert tree.groups(0) == [("a", "b"), ("c", "d")]


def test_task_affinity_is_reordered():
    builder = _builder(["a", "b", "c"], blocks=[lambda: keras.layers.Dense(4)])
    values = np.eye(3)[None]
    values[0, 0, 2] = values[0, 2, 0] = 0.9  # "c" and "a" alike, in the affinity's order c, b, a
    affinity = TaskAffinity(["c", "b", "a"], values)
    tree = BranchingHyperModel(builder, dissimilarity=affinity).tree(_hp(groups_block1=2))
    assert tree.groups(0) == [("a", "c"), ("b",)]


def test_build_sets_learning_rate_and_weighting():
    builder = _builder(["a", "b"])
    hypermodel = BranchingHyperModel(
        builder, weightings={"uncertainty": UncertaintyWeighting}, learning_rate=(0.003, 0.003)
    )
    model = hypermodel.build(keras_tuner.HyperParameters())
    assert isinstance(model, WeightedModel)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.003)


class _TemperatureDense(keras.layers.Dense):
    """A block that follows the temperature protocol."""

    def build(self, input_shape):
        super().build(input_shape)
        self.temperature_variable = self.add_weight(
            shape=(), initializer="ones", trainable=False, name="temperature"
        )


def test_temperature_is_assigned_where_relevant():
    builder = _builder(["a", "b"], blocks=[lambda: _TemperatureDense(4)])
    hypermodel = BranchingHyperModel(builder, temperature=(2.5, 2.5))
    model = hypermodel.build(keras_tuner.HyperParameters())
    temperatures = [float(layer.temperature_variable) for layer in model.layers[1:2]]
    assert temperatures == [pytest.approx(2.5)]
    plain = BranchingHyperModel(_builder(["a", "b"]), temperature=(1.0, 2.0))
    with pytest.raises(ValueError, match="no temperature variable"):
        plain.build(keras_tuner.HyperParameters())


def test_budget():
    builder = _builder(["a", "b"])
    budget = builder.count_params(builder.shared_tree())
    hypermodel = BranchingHyperModel(builder, max_params=budget)
    hypermodel.build(_hp(groups_block1=1, groups_block2=1))
    with pytest.raises(keras_tuner.errors.FailedTrialError, match="budget"):
        hypermodel.build(_hp(groups_block1=1, groups_block2=2))
    trees = [builder.shared_tree(), builder.independent_tree()]
    assert BranchingHyperModel(builder, trees=trees, max_params=budget).trees == trees[:1]
    with pytest.raises(ValueError, match="budget"):
        BranchingHyperModel(builder, trees=trees[1:], max_params=budget)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"learning_rate": (1e-2, 1e-4)}, ValueError, "learning_rate"),
        ({"temperature": 1.0}, ValueError, "temperature"),
        ({"max_groups": 3}, ValueError, "max_groups"),
        ({"max_params": 1.5}, TypeError, "max_params"),
        ({"trees": []}, ValueError, "trees"),
        ({"dissimilarity": np.zeros((3, 3))}, ValueError, "dissimilarity"),
        ({"weightings": {"x": 1}}, TypeError, "weightings"),
    ],
)
def test_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        BranchingHyperModel(_builder(["a", "b"]), **kwargs)


def test_rejects_a_non_builder():
    with pytest.raises(TypeError, match="BranchedModelBuilder"):
        BranchingHyperModel("builder")
