"""`AllocationMask`: learned task-by-component allocation (Gumbel-Matrix routing)."""

import math
import numbers

import keras
import numpy as np
from keras import ops

from keras_branching._validation import check_positive_int
from keras_branching.layers.gumbel import gumbel_softmax
from keras_branching.layers.seed_state import SeedStateSaving
from keras_branching.optimizers import mark_architecture_variable


def _check_real(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Expected `{name}` to be a number. Received: {name}={value!r}")
    return float(value)


@keras.saving.register_keras_serializable(package="keras_branching")
class AllocationMask(SeedStateSaving, keras.layers.Layer):
    """Learns which of a routed layer's components each task uses.

    The layer of Maziarz et al. (2019), "Flexible Multi-task Networks by
    Learning Parameter Allocation" (Gumbel-Matrix routing). A routed layer
    offers `num_components` components (for example several convolutions,
    a pooling and an identity) to every one of `num_tasks` tasks. For every
    (task, component) pair the layer owns a binary allocation `z[t, k]`,
    parametrised by two trainable logits (on, off), initialised to
    `log(initial_probability)` and `log(1 - initial_probability)`. Task `t`'s
    output is the mean of the outputs of its active components, that is the
    sum of the active outputs divided by `max(number active, 1)`, so zero
    when none is active.

    In training, `z` is drawn once per step (shared by the batch) from a
    binary Gumbel-softmax at the current temperature, with a hard
    straight-through sample: the forward pass uses the hard 0/1 sample, the
    backward pass the gradient of the soft one. At inference the allocation
    is greedy and noise-free (`z[t, k] = 1` where the "on" logit is at least
    the "off" logit), so predictions and exports are deterministic.

    The temperature is a non-trainable weight named `"temperature"`, so a
    callback can anneal it during training (see
    `keras_branching.callbacks.TemperatureSchedule`; the paper uses
    `max(0.5, 50 / sqrt(step + 1))`). Saved to `.keras` (and in weight
    files) with the logits and the noise generator's state, so a network
    saved mid-training and reloaded continues exactly: same temperature,
    same noise.

    With `budget` set, the layer adds, through `add_loss`, the penalty of the
    paper for every task that expects to use more than a fraction `budget`
    of the components: `budget_weight * sum_t max(0, E[active_t] / C - budget)`.

    Args:
        num_tasks: number of tasks, an int >= 1.
        num_components: number of components of the routed layer, an int >= 1.
        initial_probability: initial probability that a task uses a
            component, in (0, 1). The paper uses 0.97 on Omniglot.
        temperature: initial Gumbel-softmax temperature, > 0.
        budget: `None` (no penalty) or the fraction of components, in
            (0, 1], that each task may use before it is penalised.
        budget_weight: weight `lambda` of the budget penalty, >= 0.
        seed: optional int seed of the Gumbel noise.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a list of `num_tasks` tensors; tensor `t` stacks task `t`'s
            outputs of the `num_components` components on axis 1, so it has
            shape `(batch_t, num_components, ...)`. Tasks may have different
            batch sizes.
        training: whether to sample the allocation (training) or use the
            greedy one (inference).

    Returns:
        A list of `num_tasks` tensors of shape `(batch_t, ...)`: each task's
        mean over its allocated components.

    Example:

    >>> import numpy as np
    >>> mask = AllocationMask(num_tasks=2, num_components=3)
    >>> stacked = [np.ones((4, 3, 5), "float32"), np.ones((2, 3, 5), "float32")]
    >>> [tuple(y.shape) for y in mask(stacked)]
    [(4, 5), (2, 5)]
    >>> mask.allocation().shape
    (2, 3)
    """

    def __init__(
        self,
        num_tasks,
        num_components,
        initial_probability=0.97,
        temperature=1.0,
        budget=None,
        budget_weight=1.0,
        seed=None,
        **kwargs,
    ):
        num_tasks = check_positive_int("num_tasks", num_tasks)
        num_components = check_positive_int("num_components", num_components)
        initial_probability = _check_real("initial_probability", initial_probability)
        if not 0.0 < initial_probability < 1.0:
            raise ValueError(
                "Expected `initial_probability` in (0, 1). "
                f"Received: initial_probability={initial_probability!r}"
            )
        temperature = _check_real("temperature", temperature)
        if not temperature > 0.0 or not math.isfinite(temperature):
            raise ValueError(f"Expected `temperature` > 0. Received: temperature={temperature!r}")
        if budget is not None:
            budget = _check_real("budget", budget)
            if not 0.0 < budget <= 1.0:
                raise ValueError(
                    f"Expected `budget` in (0, 1] or None. Received: budget={budget!r}"
                )
        budget_weight = _check_real("budget_weight", budget_weight)
        if not budget_weight >= 0.0:
            raise ValueError(
                f"Expected `budget_weight` >= 0. Received: budget_weight={budget_weight!r}"
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise TypeError(f"Expected `seed` to be an int or None. Received: seed={seed!r}")
        super().__init__(**kwargs)
        self.num_tasks = num_tasks
        self.num_components = num_components
        self.initial_probability = initial_probability
        self.temperature = temperature
        self.budget = budget
        self.budget_weight = budget_weight
        self.seed = None if seed is None else int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        # The weights do not depend on the input shape: create them now, so
        # the allocation can be read before the layer is first called.
        initial = np.empty((num_tasks, num_components, 2), dtype="float32")
        initial[..., 0] = math.log(initial_probability)
        initial[..., 1] = math.log1p(-initial_probability)
        self.logits = self.add_weight(
            shape=(num_tasks, num_components, 2),
            initializer=keras.initializers.Constant(initial),
            trainable=True,
            dtype="float32",
            name="allocation_logits",
        )
        mark_architecture_variable(self.logits)
        self.temperature_variable = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(temperature),
            trainable=False,
            dtype="float32",
            name="temperature",
        )

    def _check_shapes(self, shapes):
        if not isinstance(shapes, (list, tuple)) or (
            shapes and not isinstance(shapes[0], (list, tuple))
        ):
            raise ValueError(
                f"Expected a list of {self.num_tasks} tensors, one per task. "
                f"Received a single input of shape {tuple(shapes)}"
            )
        if len(shapes) != self.num_tasks:
            raise ValueError(
                f"Expected a list of num_tasks={self.num_tasks} tensors, one per task. "
                f"Received {len(shapes)} tensors"
            )
        for t, shape in enumerate(shapes):
            if len(shape) < 2 or shape[1] != self.num_components:
                raise ValueError(
                    f"Expected each task's tensor to stack num_components="
                    f"{self.num_components} component outputs on axis 1, i.e. shape "
                    f"(batch, {self.num_components}, ...). Received: inputs[{t}] of "
                    f"shape {tuple(shape)}"
                )

    def build(self, input_shape):
        self._check_shapes(input_shape)

    def probabilities(self):
        """The current probability that each task uses each component.

        Returns:
            A float numpy array of shape `(num_tasks, num_components)`.
        """
        logits = np.asarray(keras.ops.convert_to_numpy(self.logits), dtype="float64")
        shifted = logits - logits.max(axis=-1, keepdims=True)
        exp = np.exp(shifted)
        return (exp[..., 0] / exp.sum(axis=-1)).astype("float32")

    def allocation(self):
        """The greedy allocation: which components each task uses at inference.

        Returns:
            A boolean numpy array of shape `(num_tasks, num_components)`.
        """
        logits = keras.ops.convert_to_numpy(self.logits)
        return np.asarray(logits[..., 0] >= logits[..., 1])

    def _sample(self, training):
        """The allocation `z` (num_tasks, num_components) as float32."""
        logits = ops.cast(self.logits, "float32")
        sample = gumbel_softmax(
            logits, self.temperature_variable, self.seed_generator, hard=True, training=training
        )
        return sample[..., 0]  # channel 0 is "on"; ties go to "on"

    def call(self, inputs, training=None):
        if not isinstance(inputs, (list, tuple)):
            raise ValueError(
                f"Expected a list of {self.num_tasks} tensors, one per task. "
                f"Received a single tensor of shape {tuple(inputs.shape)}"
            )
        self._check_shapes([tuple(x.shape) for x in inputs])
        z = self._sample(bool(training))
        weights = z / ops.maximum(ops.sum(z, axis=1, keepdims=True), 1.0)
        if self.budget is not None:
            probabilities = ops.softmax(ops.cast(self.logits, "float32"), axis=-1)[..., 0]
            excess = ops.mean(probabilities, axis=1) - self.budget
            self.add_loss(self.budget_weight * ops.sum(ops.maximum(excess, 0.0)))
        outputs = []
        for t, x in enumerate(inputs):
            w = ops.cast(weights[t], x.dtype)
            w = ops.reshape(w, (1, self.num_components) + (1,) * (len(x.shape) - 2))
            outputs.append(ops.sum(x * w, axis=1))
        return outputs

    def compute_output_shape(self, input_shape):
        self._check_shapes(input_shape)
        return [(shape[0], *shape[2:]) for shape in input_shape]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_tasks": self.num_tasks,
                "num_components": self.num_components,
                "initial_probability": self.initial_probability,
                "temperature": self.temperature,
                "budget": self.budget,
                "budget_weight": self.budget_weight,
                "seed": self.seed,
            }
        )
        return config
