"""Every model the library builds trains under `tf.distribute.MirroredStrategy`.

TensorFlow can split the CPU into logical devices only before it
initialises its devices, so the comparison runs in a fresh subprocess:
this file is also the worker script (`python tests/test_distributed.py`).
The worker builds each model twice from the same seeds and weights, trains
one copy on the default (one-device) strategy and one under a
`MirroredStrategy` over two logical CPUs on the same batches, and prints
both loss histories and final weights as JSON. The tests compare them. It
also runs two searches (share routing, learned allocation) in the scope and
on one device, from the same initial weights, and compares their losses,
weights and plans.
"""

import json
import os
import sys

import keras
import numpy as np
import pytest

from tests.fresh_process import REPO, run_python

_BATCH, _EPOCHS, _EXAMPLES = 16, 3, 64

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="tf.distribute is TensorFlow only"
)


@pytest.fixture(scope="module")
def results():
    stdout = run_python(os.path.abspath(__file__), cwd=REPO)
    return json.loads(stdout.strip().splitlines()[-1])


# Relative tolerance on losses and weights: the replicas sum their gradients
# in another order than one device does.
_CASES = {
    "tree": 1e-4,
    "tree_with_missing_labels": 1e-4,
    "uncertainty_weighting": 1e-4,
    "dynamic_weight_average": 1e-4,
    "gradnorm": 1e-3,
    "supernet": 1e-4,
    "routing": 1e-4,
    "allocation": 1e-4,
}
# Searches run in the scope, against the same search on one device: the
# same losses and weights, and the same plan.
_SEARCHES = {
    "share_routing_search": 1e-4,
    "allocation_search": 1e-4,
}
# Cases expected to fail under the strategy, with the reason (none today).
_KNOWN_FAILURES = {}


def _check(result, rtol):
    assert "error" not in result, result.get("error")
    assert result["replicas"] == 2
    single, mirrored = np.array(result["single"]), np.array(result["mirrored"])
    assert np.all(np.isfinite(single)) and single[-1] < single[0]
    np.testing.assert_allclose(mirrored, single, rtol=rtol, atol=1e-6)
    assert result["max_weight_difference"] < 100 * rtol


# Every kind of model the library builds: trees, loss weighting, the
# supernet and the routed allocation network (with their
# `ArchitectureOptimizer`), routing plans.
@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(_CASES))
def test_mirrored_training_matches_one_device(results, case):
    _check(results[case], _CASES[case])


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            case,
            marks=[pytest.mark.xfail(reason=_KNOWN_FAILURES[case], strict=True)]
            if case in _KNOWN_FAILURES
            else [],
        )
        for case in sorted(_SEARCHES)
    ],
)
def test_search_in_the_scope_matches_one_device(results, case):
    result = results[case]
    _check(result, _SEARCHES[case])
    assert result["same_plan"]


@pytest.mark.slow
def test_gumbel_noise_per_replica(results):
    """One architecture sample per step for the whole global batch, new every step.

    Under `MirroredStrategy` each replica draws with the same seed-generator
    state, so both replicas route their half of the batch through the same
    sampled parents (as one device routes the whole batch), and the state
    advances once per step, so successive steps draw new samples.
    """
    samples = results["gumbel_samples"]  # steps x replicas x children x parents
    assert all(step[0] == step[1] for step in samples)
    assert len({json.dumps(step[0]) for step in samples}) > 1
    for step in samples:
        assert np.allclose(np.sum(step[0], axis=-1), 1.0)


@pytest.mark.slow
def test_allocation_noise_per_replica(results):
    """`AllocationMask` too: one allocation sample per step, the same on every replica."""
    samples = results["allocation_samples"]  # steps x replicas x tasks x 1 x components
    assert all(step[0] == step[1] for step in samples)
    assert len({json.dumps(step[0]) for step in samples}) > 1
    for step in samples:
        for weights in np.asarray(step[0])[:, 0]:  # each task's allocation weights
            allocated = weights > 0
            assert np.allclose(weights[allocated], 1.0 / max(allocated.sum(), 1))


# The worker.


def _builder_pieces():
    from keras_branching.task import Task

    tasks = [Task(n, head=lambda: keras.layers.Dense(1), loss="mse") for n in "abc"]
    blocks = [lambda: keras.layers.Dense(8, activation="tanh")] * 2
    return tasks, blocks


def _data(seed=0, missing=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((_EXAMPLES, 4)).astype("float32")
    w = rng.standard_normal((4, 3)).astype("float32")
    targets = np.tanh(x @ w) + 0.1 * rng.standard_normal((_EXAMPLES, 3)).astype("float32")
    y = {n: targets[:, i : i + 1].astype("float32") for i, n in enumerate("abc")}
    if missing:
        y["b"][::3] = np.nan
    return x, y


def _tree_model():
    from keras_branching.builder import BranchedModelBuilder
    from keras_branching.tree import BranchingTree

    tasks, blocks = _builder_pieces()
    builder = BranchedModelBuilder((4,), blocks, tasks, optimizer=keras.optimizers.Adam(0.01))
    tree = BranchingTree(list("abc"), [[["a", "b", "c"]], [["a", "b"], ["c"]]])
    return builder, tree


def _make_tree():
    builder, tree = _tree_model()
    return builder.build(tree), _data()


def _make_missing():
    from keras_branching.datasets.missing import mask_missing

    builder, tree = _tree_model()
    x, y, weights = mask_missing(*_data(missing=True))
    return builder.build(tree), (x, y, weights)


def _make_weighted(scheme):
    from keras_branching.weighting.model import WeightedModel

    builder, tree = _tree_model()
    model = WeightedModel(builder.build(tree, compile=False), scheme(builder.task_names))
    builder.compile(model)
    return model, _data()


def _make_supernet():
    from keras_branching.builder import BranchedModelBuilder
    from keras_branching.learn_to_branch import build_supernet

    tasks, blocks = _builder_pieces()
    builder = BranchedModelBuilder((4,), blocks, tasks, optimizer=keras.optimizers.Adam(0.01))
    return build_supernet(builder, [2, 3], router_learning_rate=0.1, seed=0), _data()


def _make_routing():
    from keras_branching.routing.builder import RoutingModelBuilder
    from keras_branching.routing.plan import RoutingPlan

    tasks, blocks = _builder_pieces()
    builder = RoutingModelBuilder((4,), blocks[:1], tasks, optimizer=keras.optimizers.Adam(0.01))
    return builder.build(RoutingPlan.mmoe(list("abc"), num_experts=2)), _data()


def _allocation_builder():
    from keras_branching.allocation import AllocationBuilder

    tasks, _ = _builder_pieces()

    def dense():
        return keras.layers.Dense(4, activation="tanh")

    return AllocationBuilder(
        (4,),
        [[dense, dense, keras.layers.Identity], dense],
        tasks,
        optimizer=keras.optimizers.Adam(0.01),
    )


def _make_allocation():
    """The routed network of learned allocation, as `LearnedAllocation` compiles it."""
    from keras_branching.allocation import LearnedAllocation

    search = LearnedAllocation(
        _allocation_builder(),
        initial_temperature=1.0,
        allocation_learning_rate=0.05,
        weight_decay=1e-3,  # a regularisation loss, scaled like the task losses
        seed=0,
    )
    return search.build_search_model(), _data()


def _make_share_routing_search():
    from keras_branching.routing import RoutingModelBuilder, ShareRouting

    tasks, blocks = _builder_pieces()
    builder = RoutingModelBuilder((4,), blocks, tasks, optimizer=keras.optimizers.Adam(0.01))
    search = ShareRouting(
        builder,
        num_experts=2,
        steps_per_update=2,
        samples_per_update=2,
        metric=keras.metrics.R2Score(),
        seed=0,
    )
    x, y = _data()
    return (
        search,
        (x[:48], {t: v[:48] for t, v in y.items()}),
        (x[48:], {t: v[48:] for t, v in y.items()}),
    )


def _make_allocation_search():
    from keras_branching.allocation import LearnedAllocation

    search = LearnedAllocation(
        _allocation_builder(), initial_temperature=5.0, allocation_learning_rate=0.05, seed=0
    )
    x, y = _data()
    return search, (x, y), None


def _fit(model, data):
    x, y, *weights = data
    history = model.fit(
        x,
        y,
        sample_weight=weights[0] if weights else None,
        batch_size=_BATCH,
        epochs=_EPOCHS,
        shuffle=False,
        verbose=0,
    )
    return [float(v) for v in history.history["loss"]]


def _compare(make, strategy):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        mirrored, data = make()
    keras.utils.set_random_seed(0)
    single, _ = make()
    single.set_weights(mirrored.get_weights())
    result = {"replicas": mirrored.distribute_strategy.num_replicas_in_sync}
    result["single"] = _fit(single, data)
    result["mirrored"] = _fit(mirrored, data)
    result["max_weight_difference"] = max(
        float(np.max(np.abs(a - b) / (np.abs(a) + 1e-3)))
        for a, b in zip(single.get_weights(), mirrored.get_weights())
    )
    return result


def _compare_search(make, strategy):
    """A search run in the scope against the same search on one device.

    Both start from the same weights: the mirrored run records its search
    model's initial weights, which the one-device run loads before training.
    """
    initial = []

    class Record(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            initial.extend(self.model.get_weights())

    class Load(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.model.set_weights(initial)

    def run(search, data, validation, callback):
        x, y = data
        return search.search(
            x,
            y,
            validation_data=validation,
            epochs=_EPOCHS,
            batch_size=_BATCH,
            callbacks=[callback],
            verbose=0,
            shuffle=False,
        )

    with strategy.scope():
        mirrored_search, data, validation = make()
        mirrored = run(mirrored_search, data, validation, Record())
    single_search, data, validation = make()
    single = run(single_search, data, validation, Load())
    mirrored_model, single_model = mirrored_search.model, single_search.model
    return {
        "replicas": mirrored_model.distribute_strategy.num_replicas_in_sync,
        "single": single.history["loss"],
        "mirrored": mirrored.history["loss"],
        "same_plan": mirrored.plan == single.plan,
        "max_weight_difference": max(
            float(np.max(np.abs(a - b) / (np.abs(a) + 1e-3)))
            for a, b in zip(single_model.get_weights(), mirrored_model.get_weights())
        ),
    }


def _gumbel_samples(strategy):
    from keras_branching.layers.gumbel_router import GumbelRouter

    with strategy.scope():
        router = GumbelRouter(3, temperature=1.0, seed=0)
        router.build([(None, 4)] * 4)
    return _replica_samples(strategy, lambda: router.mixing_weights(training=True))


def _allocation_samples(strategy):
    from keras_branching.layers.allocation_mask import AllocationMask

    with strategy.scope():
        mask = AllocationMask(3, 4, initial_probability=0.5, seed=0)
    # Component k outputs the one-hot e_k, so each task's output is its row of
    # allocation weights: 1 / (number allocated) on its allocated components.
    components = [np.eye(4, dtype="float32")[None]] * 3
    return _replica_samples(strategy, lambda: mask(components, training=True))


def _replica_samples(strategy, draw, steps=6):
    """What `draw()` returns on each replica, in `steps` successive steps."""
    import tensorflow as tf

    @tf.function
    def sample():
        return strategy.run(draw)

    samples = []
    for _ in range(steps):
        per_replica = strategy.experimental_local_results(sample())
        samples.append([np.asarray(s).round(6).tolist() for s in per_replica])
    return samples


def main():
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from keras_branching.weighting.dwa import DynamicWeightAverage
    from keras_branching.weighting.gradnorm import GradNorm
    from keras_branching.weighting.uncertainty import UncertaintyWeighting

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    makers = {
        "tree": _make_tree,
        "tree_with_missing_labels": _make_missing,
        "uncertainty_weighting": lambda: _make_weighted(UncertaintyWeighting),
        "dynamic_weight_average": lambda: _make_weighted(DynamicWeightAverage),
        "gradnorm": lambda: _make_weighted(GradNorm),
        "supernet": _make_supernet,
        "routing": _make_routing,
        "allocation": _make_allocation,
    }
    searches = {
        "share_routing_search": _make_share_routing_search,
        "allocation_search": _make_allocation_search,
    }
    only = sys.argv[1:]  # optional case names, to run a few by hand
    results = {}
    for name, make in [*makers.items(), *searches.items()]:
        if only and name not in only:
            continue
        compare = _compare_search if name in searches else _compare
        try:
            results[name] = compare(make, strategy)
        except Exception as error:  # reported by the test of that case
            results[name] = {"error": f"{type(error).__name__}: {error}"[:2000]}
    results["gumbel_samples"] = _gumbel_samples(strategy)
    results["allocation_samples"] = _allocation_samples(strategy)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
