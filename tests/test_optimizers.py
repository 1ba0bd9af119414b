"""`ArchitectureOptimizer`: marked variables get their own optimizer, on every path."""

import textwrap

import keras
import numpy as np
import pytest

from keras_branching.layers import GumbelRouter
from keras_branching.optimizers import (
    ArchitectureOptimizer,
    is_architecture_variable,
    mark_architecture_variable,
)
from tests.fresh_process import run_python


def _router_model():
    inputs = keras.Input((3,))
    parents = [keras.layers.Dense(2, name=f"parent{p}")(inputs) for p in range(2)]
    children = GumbelRouter(2, seed=1, name="router")(parents)
    return keras.Model(inputs, keras.layers.Add()(children))


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((16, 3)).astype("float32"), np.ones((16, 2), "float32")


def _moves(model, optimizer, policy="float32"):
    """Trains one epoch; returns (weights moved, logits moved)."""
    x, y = _data()
    model.compile(optimizer, "mse")
    router = model.get_layer("router")
    logits = keras.ops.convert_to_numpy(router.router_logits)
    kernel = keras.ops.convert_to_numpy(model.get_layer("parent0").kernel)
    model.fit(x, y, epochs=3, batch_size=4, verbose=0)
    return (
        not np.allclose(kernel, keras.ops.convert_to_numpy(model.get_layer("parent0").kernel)),
        not np.allclose(logits, keras.ops.convert_to_numpy(router.router_logits)),
    )


def test_marker_is_set_where_created():
    model = _router_model()
    marked = [v.path for v in model.trainable_variables if is_architecture_variable(v)]
    assert marked == ["router/router_logits"]


@pytest.mark.parametrize("frozen", ["weights", "architecture"])
def test_each_optimizer_trains_only_its_variables(frozen):
    rates = {"weights": (0.0, 0.1), "architecture": (0.1, 0.0)}[frozen]
    optimizer = ArchitectureOptimizer(
        keras.optimizers.SGD(rates[0]), keras.optimizers.SGD(rates[1])
    )
    weights_moved, logits_moved = _moves(_router_model(), optimizer)
    assert weights_moved == (frozen != "weights")
    assert logits_moved == (frozen != "architecture")
    assert int(optimizer.iterations) == 12  # the weights' optimizer counts steps


def test_mixed_float16_wraps_and_trains():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        optimizer = ArchitectureOptimizer(keras.optimizers.SGD(0.0), keras.optimizers.SGD(0.1))
        weights_moved, logits_moved = _moves(_router_model(), optimizer)
    finally:
        keras.config.set_dtype_policy("float32")
    assert (weights_moved, logits_moved) == (False, True)


def test_with_learning_rate_copies_the_optimizer():
    base = keras.optimizers.Adam(1e-3, beta_1=0.8)
    optimizer = ArchitectureOptimizer.with_learning_rate(base, 0.05)
    assert optimizer.inner_optimizer is not base
    assert optimizer.architecture_optimizer.beta_1 == pytest.approx(0.8)
    assert float(optimizer.architecture_optimizer.learning_rate) == pytest.approx(0.05)
    assert float(optimizer.learning_rate) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="architecture_learning_rate"):
        ArchitectureOptimizer.with_learning_rate(base, 0)


def test_rejects_one_instance_twice_and_bad_names():
    adam = keras.optimizers.Adam()
    with pytest.raises(ValueError, match="two different optimizer instances"):
        ArchitectureOptimizer(adam, adam)
    with pytest.raises(ValueError, match="Received: optimizer='nope'"):
        ArchitectureOptimizer("nope", "adam")


def test_save_and_reload_keeps_the_state(tmp_path):
    model = _router_model()
    optimizer = ArchitectureOptimizer.with_learning_rate(keras.optimizers.Adam(1e-3), 0.1)
    _moves(model, optimizer)
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert isinstance(reloaded.optimizer, ArchitectureOptimizer)
    for a, b in zip(model.optimizer.variables, reloaded.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert is_architecture_variable(reloaded.get_layer("router").router_logits)


def test_mark_returns_the_variable():
    variable = keras.Variable(np.zeros(2, "float32"))
    assert mark_architecture_variable(variable) is variable
    assert is_architecture_variable(variable)


_SCRIPT = """
import numpy as np, keras
{setup}
from keras_branching.layers import GumbelRouter
from keras_branching.optimizers import ArchitectureOptimizer
with {scope}:
    inputs = keras.Input((3,))
    parents = [keras.layers.Dense(2, name=f"parent{{p}}")(inputs) for p in range(2)]
    router = GumbelRouter(2, seed=1, name="router")
    model = keras.Model(inputs, keras.layers.Add()(router(parents)))
    optimizer = ArchitectureOptimizer(keras.optimizers.SGD(0.0), keras.optimizers.SGD(0.1))
    model.compile(optimizer, "mse")
to_numpy = keras.ops.convert_to_numpy
kernel, logits = to_numpy(model.get_layer("parent0").kernel), to_numpy(router.router_logits)
x = np.random.default_rng(0).standard_normal((16, 3)).astype("float32")
model.fit(x, np.ones((16, 2), "float32"), epochs=2, batch_size=4, verbose=0)
assert np.allclose(kernel, keras.ops.convert_to_numpy(model.get_layer("parent0").kernel))
assert not np.allclose(logits, keras.ops.convert_to_numpy(router.router_logits))
print("OK", keras.backend.backend())
"""


@pytest.mark.slow
def test_on_jax(tmp_path):
    script = tmp_path / "jax_script.py"
    script.write_text(textwrap.dedent(_SCRIPT.format(setup="", scope="keras.name_scope('s')")))
    assert "OK jax" in run_python(script, tmp_path, backend="jax")


@pytest.mark.slow
def test_under_mirrored_strategy(tmp_path):
    setup = (
        "import tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "devices = [tf.config.LogicalDeviceConfiguration()] * 2\n"
        "tf.config.set_logical_device_configuration(cpu, devices)\n"
        "strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])\n"
    )
    script = tmp_path / "mirrored_script.py"
    script.write_text(_SCRIPT.format(setup=setup, scope="strategy.scope()"))
    assert "OK tensorflow" in run_python(script, tmp_path)
