"""The library on the JAX backend (run by the tox env `jax`, KERAS_BACKEND=jax).

The layer tests (`tests/layers`) and the weighting tests run there too;
these add the models the builders make, the backend-agnostic training
toolkit, and the clear errors of the TensorFlow-only parts.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_branching.builder import BranchedModelBuilder
from keras_branching.datasets.missing import mask_missing
from keras_branching.task import Task
from keras_branching.tree import BranchingTree
from keras_branching.weighting.model import WeightedModel
from keras_branching.weighting.uncertainty import UncertaintyWeighting

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="JAX backend tests: run with KERAS_BACKEND=jax"
)

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _builder(names="abc"):
    return BranchedModelBuilder(
        inputs=(4,),
        blocks=[lambda: keras.layers.Dense(8, activation="tanh")] * 2,
        tasks=[Task(n, head=lambda: keras.layers.Dense(1), loss="mse") for n in names],
        optimizer=keras.optimizers.Adam(0.02),
    )


def _data(names="abc", num_examples=64):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((num_examples, 4)).astype("float32")
    w = rng.standard_normal((4, len(names))).astype("float32")
    y = np.tanh(x @ w)
    return x, {n: y[:, i : i + 1] for i, n in enumerate(names)}


def _trains(model, x, y, **fit_kwargs):
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, **fit_kwargs).history["loss"]
    assert np.all(np.isfinite(history)) and history[-1] < history[0], history
    first, second = model.predict(x, verbose=0), model.predict(x, verbose=0)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])


def test_library_imports_without_tensorflow():
    code = (
        "import sys\n"
        "import keras_branching, keras_branching.layers, keras_branching.weighting\n"
        "import keras_branching.tuning, keras_branching.datasets.missing\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )
    env = dict(os.environ, KERAS_BACKEND="jax")
    process = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=_REPO
    )
    assert process.returncode == 0, process.stderr[-3000:]


def test_tree_model_trains():
    builder = _builder()
    tree = BranchingTree(list("abc"), [[["a", "b", "c"]], [["a", "b"], ["c"]]])
    _trains(builder.build(tree), *_data())


def test_supernet_trains():
    from keras_branching.learn_to_branch import build_supernet

    _trains(build_supernet(_builder(), [2, 3], seed=0), *_data())


def test_routing_model_trains():
    from keras_branching.routing.builder import RoutingModelBuilder
    from keras_branching.routing.plan import RoutingPlan

    builder = RoutingModelBuilder(
        (4,),
        [lambda: keras.layers.Dense(8, activation="tanh")],
        [Task(n, head=lambda: keras.layers.Dense(1), loss="mse") for n in "abc"],
    )
    _trains(builder.build(RoutingPlan.mmoe(list("abc"), num_experts=2)), *_data())


def test_uncertainty_weighting_and_missing_labels():
    builder = _builder("ab")
    x, y = _data("ab")
    y["b"] = np.full_like(y["b"], np.nan)
    x, y, weights = mask_missing(x, y)
    weighted = WeightedModel(
        builder.build(builder.shared_tree(), compile=False), UncertaintyWeighting(["a", "b"])
    )
    builder.compile(weighted)
    head_b = [np.array(w) for w in weighted.model.get_layer("head_b").get_weights()]
    history = weighted.fit(x, y, sample_weight=weights, epochs=3, verbose=0).history
    assert history["b_loss"] == [0.0, 0.0, 0.0]
    for before, after in zip(head_b, weighted.model.get_layer("head_b").get_weights()):
        np.testing.assert_array_equal(before, after)
    # A task without labels is left out of the loss, log-variance term included.
    weights_now = weighted.weighting.weights_dict()
    assert weights_now["b"] == pytest.approx(0.5)
    assert weights_now["a"] != pytest.approx(0.5)


def test_gradnorm_says_it_needs_tensorflow():
    from keras_branching.weighting.gradnorm import GradNorm

    with pytest.raises(RuntimeError, match="TensorFlow backend"):
        GradNorm(["a", "b"])
