"""`TemperatureSchedule`: anneals the temperature of Gumbel layers during `fit`.

The temperature protocol
------------------------
A layer takes part in annealing when it has an attribute
`temperature_variable` holding a non-trainable scalar `keras.Variable`
(create it in `build` with
`self.add_weight(shape=(), trainable=False, name="temperature", ...)`).
The layer reads the variable in `call`; the callback assigns it a new value
before every training step. Assigning a variable (rather than changing a
Python float) keeps the compiled training function valid: nothing is
retraced, also under `jit_compile=True`. `GumbelRouter` follows the
protocol; any other layer (an allocation mask, ...) only has to do the same.
`find_temperature_variables(model)` lists what the callback will anneal.
"""

import math
import numbers

import keras
import numpy as np

from keras_branching._validation import check_positive

_SCHEDULES = ("exponential", "inverse_sqrt")


def find_temperature_variables(model):
    """The temperature variables of every layer of `model`, nested ones included.

    A layer contributes when it has a `temperature_variable` attribute that
    is a `keras.Variable` (see the module docstring for the protocol).

    Args:
        model: a Keras model or layer.

    Returns:
        A list of `(layer, variable)` pairs, each variable once, in the
        order of the model's layers.
    """
    found, seen = [], set()

    def visit(layer):
        variable = getattr(layer, "temperature_variable", None)
        if isinstance(variable, keras.Variable) and id(variable) not in seen:
            seen.add(id(variable))
            found.append((layer, variable))
        for child in getattr(layer, "layers", None) or []:
            if child is not layer:
                visit(child)

    visit(model)
    return found


class TemperatureSchedule(keras.callbacks.Callback):
    """Anneals the temperature of every Gumbel layer of the model during `fit`.

    Before each training step the callback computes the temperature of the
    step and assigns it to every layer that follows the temperature
    protocol (an attribute `temperature_variable`, a non-trainable scalar
    variable; see `keras_branching.callbacks.temperature`), for example every
    `GumbelRouter` of a supernet. The step `s` is the optimizer's
    `iterations` (training steps done so far; read once per epoch, then
    counted), so the schedule continues across several `fit` calls and is
    exact with `steps_per_execution > 1` (where it changes once per
    execution). Variables are assigned only when the value changes, so the
    per-step cost is a few Python operations once the floor is reached.

    Schedules (`s` counts steps after the warm-up):

    - `"exponential"`: `tau = max(min_temperature, initial_temperature *
      decay_rate ** (s / decay_steps))`;
    - `"inverse_sqrt"`: `tau = max(min_temperature, initial_temperature /
      sqrt(s + 1))`, the schedule of learned parameter allocation
      (Maziarz et al.; there `initial_temperature=50, min_temperature=0.5`);
    - a callable `step -> temperature`, for anything else (called with the
      step after the warm-up, its result must be > 0).

    Warm-up: for the first `warmup_steps` steps the temperature stays at
    `initial_temperature` (a high temperature: soft samples close to
    uniform); the decay starts afterwards.

    Args:
        schedule: `"exponential"` (default), `"inverse_sqrt"` or a callable.
        initial_temperature: the temperature at step 0, > 0.
        min_temperature: the floor, > 0 and <= `initial_temperature`.
        decay_rate: factor per `decay_steps` steps of `"exponential"`, in
            (0, 1].
        decay_steps: steps per `decay_rate` factor, > 0.
        warmup_steps: steps held at `initial_temperature`, an int >= 0.

    Raises:
        ValueError: for an unknown schedule or out-of-range values; at the
            start of training if the model has no layer with a
            temperature.

    Example:

    >>> schedule = TemperatureSchedule("inverse_sqrt", initial_temperature=50.0,
    ...                                min_temperature=0.5)
    >>> [round(schedule.temperature(s), 2) for s in (0, 3, 99, 10**6)]
    [50.0, 25.0, 5.0, 0.5]
    """

    def __init__(
        self,
        schedule="exponential",
        initial_temperature=5.0,
        min_temperature=0.5,
        decay_rate=0.99,
        decay_steps=1,
        warmup_steps=0,
    ):
        super().__init__()
        if not callable(schedule) and schedule not in _SCHEDULES:
            raise ValueError(
                f"Expected `schedule` to be one of {_SCHEDULES} or a callable "
                f"`step -> temperature`. Received: schedule={schedule!r}"
            )
        initial_temperature = check_positive("initial_temperature", initial_temperature)
        min_temperature = check_positive("min_temperature", min_temperature)
        if min_temperature > initial_temperature:
            raise ValueError(
                "Expected `min_temperature` <= `initial_temperature`. Received: "
                f"min_temperature={min_temperature}, initial_temperature={initial_temperature}"
            )
        decay_rate = check_positive("decay_rate", decay_rate)
        if decay_rate > 1:
            raise ValueError(f"Expected `decay_rate` in (0, 1]. Received: decay_rate={decay_rate}")
        decay_steps = check_positive("decay_steps", decay_steps)
        if (
            isinstance(warmup_steps, bool)
            or not isinstance(warmup_steps, numbers.Integral)
            or warmup_steps < 0
        ):
            raise ValueError(
                "Expected `warmup_steps` to be an int >= 0. "
                f"Received: warmup_steps={warmup_steps!r}"
            )
        self.schedule = schedule
        self.initial_temperature = initial_temperature
        self.min_temperature = min_temperature
        self.decay_rate = decay_rate
        self.decay_steps = decay_steps
        self.warmup_steps = int(warmup_steps)
        self._variables = []
        self.current_temperature = None
        self._epoch_start = 0

    def temperature(self, step):
        """The temperature of training step `step` (0-based), a float."""
        if step < self.warmup_steps:
            return self.initial_temperature
        step = step - self.warmup_steps
        if callable(self.schedule):
            value = self.schedule(step)
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ValueError(
                    "Expected the temperature schedule to return a number > 0. "
                    f"Received: {value!r} at step {step}"
                )
            return float(value)
        if self.schedule == "exponential":
            value = self.initial_temperature * self.decay_rate ** (step / self.decay_steps)
        else:
            value = self.initial_temperature / math.sqrt(step + 1)
        return max(self.min_temperature, value)

    def _iterations(self):
        return int(np.asarray(keras.ops.convert_to_numpy(self.model.optimizer.iterations)))

    def _assign(self, value):
        if value != self.current_temperature:  # after the floor: nothing to do
            # On JAX, `fit` keeps the state outside the variables during an epoch
            # and reads them again only after a sync: write the state back first,
            # so the next step starts from the variables, new temperature included.
            sync = getattr(self.model, "jax_state_sync", None)
            if sync is not None:
                sync()
            for _, variable in self._variables:
                variable.assign(value)
            self.current_temperature = value

    def on_train_begin(self, logs=None):
        self._variables = find_temperature_variables(self.model)
        if not self._variables:
            raise ValueError(
                "`TemperatureSchedule` found no layer with a temperature in the model "
                f"{self.model.name!r}. Expected layers with a `temperature_variable` "
                "attribute (a non-trainable scalar variable), such as `GumbelRouter`."
            )
        self.current_temperature = None
        self._epoch_start = self._iterations()
        self._assign(self.temperature(self._epoch_start))

    def on_epoch_begin(self, epoch, logs=None):
        # Read the optimizer's step once per epoch (a device sync), then count
        # batches: `batch` is the index of the epoch's next step, also with
        # `steps_per_execution > 1`.
        self._epoch_start = self._iterations()

    def on_train_batch_begin(self, batch, logs=None):
        self._assign(self.temperature(self._epoch_start + batch))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["temperature"] = self.current_temperature
