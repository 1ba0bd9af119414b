import math

import keras
import numpy as np
import pytest

from keras_branching.callbacks.temperature import TemperatureSchedule, find_temperature_variables
from keras_branching.layers.gumbel_router import GumbelRouter


class _Recorder(keras.callbacks.Callback):
    """Records every router's temperature as seen at the start of each step."""

    def __init__(self, routers):
        super().__init__()
        self.routers = routers
        self.seen = []

    def on_train_batch_begin(self, batch, logs=None):
        if hasattr(self.model, "jax_state_sync"):  # JAX keeps the state outside mid-epoch
            self.model.jax_state_sync()
        self.seen.append(
            [float(keras.ops.convert_to_numpy(r.temperature_variable)) for r in self.routers]
        )


def _model(nested=False):
    inputs = keras.Input((3,))
    a, b = keras.layers.Dense(4)(inputs), keras.layers.Dense(4)(inputs)
    first = GumbelRouter(2, seed=0, name="first")
    children = first([a, b])
    second = GumbelRouter(1, seed=1, name="second")
    if nested:
        parents = [keras.Input((4,)), keras.Input((4,))]
        inner = keras.Model(parents, second(parents), name="inner")
        out = inner(children)
    else:
        out = second(children)
    model = keras.Model(inputs, keras.layers.Dense(1)(out[0]))
    model.compile("sgd", "mse")
    return model, [first, second]


def _fit(model, callbacks, epochs=2, steps=3):
    x = np.random.default_rng(0).standard_normal((4 * steps, 3)).astype("float32")
    return model.fit(x, x[:, :1], batch_size=4, epochs=epochs, callbacks=callbacks, verbose=0)


def test_exponential_values():
    schedule = TemperatureSchedule(
        "exponential", initial_temperature=4.0, min_temperature=1.0, decay_rate=0.5, decay_steps=2
    )
    assert [schedule.temperature(s) for s in (0, 2, 4, 6, 100)] == [4.0, 2.0, 1.0, 1.0, 1.0]
    assert schedule.temperature(1) == pytest.approx(4.0 * 0.5**0.5)


def test_inverse_sqrt_values_match_allocation_paper():
    schedule = TemperatureSchedule("inverse_sqrt", initial_temperature=50.0, min_temperature=0.5)
    for step in (0, 1, 10, 500, 9998, 20000):
        assert schedule.temperature(step) == pytest.approx(max(0.5, 50.0 / math.sqrt(step + 1)))
    assert schedule.temperature(9999) == pytest.approx(0.5)


def test_warmup_holds_initial_then_decays_from_step_zero():
    schedule = TemperatureSchedule(
        "inverse_sqrt", initial_temperature=8.0, min_temperature=0.1, warmup_steps=3
    )
    assert [schedule.temperature(s) for s in range(5)] == [8.0, 8.0, 8.0, 8.0, 8.0 / math.sqrt(2)]


def test_callable_schedule():
    schedule = TemperatureSchedule(lambda step: 1.0 + step, initial_temperature=1.0)
    assert schedule.temperature(4) == 5.0
    with pytest.raises(ValueError, match="return a number > 0"):
        TemperatureSchedule(lambda step: 0.0, initial_temperature=1.0).temperature(0)


@pytest.mark.parametrize("nested", [False, True])
def test_anneals_every_router_during_fit(nested):
    model, routers = _model(nested)
    assert [layer for layer, _ in find_temperature_variables(model)] == routers
    schedule = TemperatureSchedule("exponential", initial_temperature=8.0, decay_rate=0.5)
    recorder = _Recorder(routers)
    history = _fit(model, [schedule, recorder], epochs=2, steps=3)
    expected = [max(0.5, 8.0 * 0.5**s) for s in range(6)]
    assert recorder.seen == [[t, t] for t in expected]
    assert history.history["temperature"] == [expected[2], expected[5]]


def test_continues_across_fit_calls():
    model, routers = _model()
    schedule = TemperatureSchedule("inverse_sqrt", initial_temperature=9.0, min_temperature=0.1)
    _fit(model, [schedule], epochs=1, steps=3)
    recorder = _Recorder(routers)
    _fit(model, [schedule, recorder], epochs=1, steps=1)
    # Three steps done: tau = 9 / sqrt(3 + 1).
    assert recorder.seen == [[4.5, 4.5]]


def test_works_with_jit_compile():
    model, routers = _model()
    model.compile("sgd", "mse", jit_compile=True)
    recorder = _Recorder(routers)
    _fit(model, [TemperatureSchedule(decay_rate=0.5, initial_temperature=4.0), recorder], epochs=1)
    assert recorder.seen == [[4.0, 4.0], [2.0, 2.0], [1.0, 1.0]]


def test_model_without_temperature_is_an_error():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs), name="plain")
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="found no layer with a temperature.*'plain'"):
        _fit(model, [TemperatureSchedule()], epochs=1, steps=1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"schedule": "linear"}, "schedule='linear'"),
        ({"initial_temperature": 0}, "Expected `initial_temperature` > 0. Received: "),
        ({"min_temperature": -1}, "min_temperature=-1"),
        ({"initial_temperature": 1.0, "min_temperature": 2.0}, "min_temperature=2.0"),
        ({"decay_rate": 1.5}, "decay_rate=1.5"),
        ({"decay_rate": 0}, "decay_rate=0"),
        ({"decay_steps": 0}, "decay_steps=0"),
        ({"warmup_steps": -1}, "warmup_steps=-1"),
        ({"warmup_steps": 1.5}, "warmup_steps=1.5"),
    ],
)
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        TemperatureSchedule(**kwargs)


def test_steps_per_execution():
    model, routers = _model()
    model.compile("sgd", "mse", steps_per_execution=2)
    recorder = _Recorder(routers)
    schedule = TemperatureSchedule(decay_rate=0.5, initial_temperature=64.0)
    _fit(model, [schedule, recorder], epochs=2, steps=4)
    # One call per execution of two steps; epoch 2 starts at step 4.
    assert recorder.seen == [[t, t] for t in (64.0, 16.0, 4.0, 1.0)]
