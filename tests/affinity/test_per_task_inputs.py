"""The tree searches with per-task inputs: every task has its own examples.

The affinity compares the tasks' networks on one probe batch pooled from
every task (`probe_inputs`) and fed to every task's input.
"""

import math

import keras
import numpy as np
import pytest

from keras_branching.affinity.features import branch_point_features, probe_inputs
from keras_branching.affinity.rsa import rsa_affinity
from keras_branching.affinity.search import AffinityBranching
from keras_branching.builder import BranchedModelBuilder
from keras_branching.learn_to_branch import LearnToBranch
from keras_branching.task import Task
from keras_branching.tree import BranchingTree

TASKS = ["a", "b", "c"]
DIM = 5
SIZES = {"a": 50, "b": 70, "c": 40}  # each task its own number of examples


def make_builder(seed=0):
    return BranchedModelBuilder(
        dict.fromkeys(TASKS, (DIM,)),
        [lambda: keras.layers.Dense(8, activation="relu")] * 2,
        [Task(t, lambda: keras.layers.Dense(1), "mse") for t in TASKS],
        seed=seed,
    )


def task_data(sizes=SIZES, seed=0):
    rng = np.random.default_rng(seed)
    x = {
        t: rng.standard_normal((n, DIM)).astype("float32") + 10 * i
        for i, (t, n) in enumerate(sizes.items())
    }
    y = {t: (x[t][:, :1] - 10 * i) * (i + 1) for i, t in enumerate(sizes)}
    return x, y


def batches(x, y, batch_size=8, repeat=True):
    tf = pytest.importorskip("tensorflow")
    from keras_branching.datasets import task_batches

    datasets = {t: tf.data.Dataset.from_tensor_slices((x[t], y[t])) for t in x}
    return task_batches(datasets, batch_size, shuffle=False, repeat=repeat)


def test_probe_inputs_pools_a_seeded_share_of_every_task():
    x, _ = task_data()
    probe = probe_inputs(x, 10, seed=3)
    assert probe.shape == (10, DIM)
    # Shares 4, 3, 3, each drawn from its own task (task i is shifted by 10 i).
    owners = [int(round(v / 10)) for v in probe.mean(axis=1)]
    assert owners == [0] * 4 + [1] * 3 + [2] * 3
    for row in probe[:4]:
        assert any(np.array_equal(row, r) for r in x["a"])
    np.testing.assert_array_equal(probe, probe_inputs(x, 10, seed=3))
    assert not np.array_equal(probe, probe_inputs(x, 10, seed=4))


def test_probe_inputs_rejects_too_few_examples_and_other_inputs():
    x, _ = task_data({"a": 5, "b": 2})
    with pytest.raises(ValueError, match="task 'b'.*Received: 2"):
        probe_inputs(x, 8)
    with pytest.raises(TypeError, match="ndarray"):
        probe_inputs(x["a"], 2)
    with pytest.raises(ValueError, match="num_samples=0"):
        probe_inputs(x, 0)


def test_features_feed_one_probe_batch_to_every_task():
    builder = make_builder()
    model = builder.build(builder.independent_tree())
    probe = probe_inputs(task_data()[0], 9, seed=0)
    features = branch_point_features(model, probe)
    expected = branch_point_features(model, probe)  # deterministic
    same = model.predict(dict.fromkeys(TASKS, probe), verbose=0)
    for t in TASKS:
        assert [f.shape for f in features[t]] == [(9, 8), (9, 8)]
        np.testing.assert_allclose(features[t][1], expected[t][1])
        head = model.get_layer(model.get_config()["output_layers"][t][0])
        np.testing.assert_allclose(head(features[t][1]), same[t], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"probe_inputs.*\['a', 'b', 'c'\]"):
        branch_point_features(model, dict.fromkeys(TASKS, probe))


def test_affinity_on_task_batches_measures_on_a_pooled_validation_probe():
    x, y = task_data()
    x_val, y_val = task_data({"a": 12, "b": 20, "c": 9}, seed=1)
    builder = make_builder()
    search = AffinityBranching(builder, budget=0.5, num_samples=21, seed=5)
    result = search.search(
        batches(x, y),
        validation_data=batches(x_val, y_val, repeat=False),
        epochs=1,
        steps_per_epoch=3,
        shuffle=False,
        verbose=0,
    )
    assert "val_loss" in result.history
    # ceil(21 / 3) = 7 held-out inputs of every task, 7 of each pooled.
    probe = probe_inputs({t: v[:7] for t, v in x_val.items()}, 21, seed=5)
    features = branch_point_features(search.model, probe)
    assert search.affinity == rsa_affinity({t: features[t] for t in TASKS})
    assert builder.count_params(result.plan) == result.details["size"]
    assert isinstance(result.build(), keras.Model)
    with pytest.raises(ValueError, match="at least 10 inputs per task.*Received: 9"):
        AffinityBranching(builder, num_samples=28).search(
            batches(x, y),
            validation_data=batches(x_val, y_val, repeat=False),
            epochs=1,
            steps_per_epoch=1,
            shuffle=False,
            verbose=0,
        )


def test_affinity_on_per_task_arrays_holds_out_a_share_of_every_task():
    x, y = task_data(dict.fromkeys(TASKS, 40))  # `fit` takes arrays of one length
    builder = make_builder()
    search = AffinityBranching(builder, budget=0.5, num_samples=30, seed=0)
    assert search.min_examples() == math.ceil(30 / 3) + 1
    search.search(x, y, epochs=1, batch_size=10, verbose=0)
    probe = probe_inputs({t: v[-10:] for t, v in x.items()}, 30, seed=0)
    features = branch_point_features(search.model, probe)
    assert search.affinity == rsa_affinity({t: features[t] for t in TASKS})


def test_learn_to_branch_on_task_batches():
    x, y = task_data()
    builder = make_builder()
    result = LearnToBranch(builder, widths=[1, 2], seed=0).search(
        batches(x, y), epochs=2, steps_per_epoch=3, shuffle=False, verbose=0
    )
    assert isinstance(result.plan, BranchingTree) and result.plan.tasks == tuple(TASKS)
    model = result.build()
    history = model.fit(batches(x, y), epochs=1, steps_per_epoch=2, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"][0])
