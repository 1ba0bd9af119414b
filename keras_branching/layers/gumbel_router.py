"""`GumbelRouter`: each child picks one parent by a Gumbel-softmax sample."""

import numbers

import keras
import numpy as np
from keras import ops

from keras_branching._validation import check_non_negative, check_positive, check_positive_int
from keras_branching.layers.gumbel import gumbel_softmax
from keras_branching.layers.seed_state import SeedStateSaving
from keras_branching.optimizers import mark_architecture_variable


@keras.saving.register_keras_serializable(package="keras_branching")
class GumbelRouter(SeedStateSaving, keras.layers.Layer):
    """Routes each of `num_children` children to one of P parent tensors.

    The link between two layers of the learning-to-branch supernet (Guo,
    Lee, Ulbricht, ICML 2020). The router owns logits `theta` of shape
    `(num_children, P)`: row `c` scores the P parents of child `c`. Child
    `c`'s input is `sum_p w[c, p] * parents[p]`, where:

    - in training (`training=True`), `w[c]` is a Gumbel-softmax sample of
      `theta[c]` at the current temperature `tau`:
      `softmax((theta[c] + g) / tau)` with `g` standard Gumbel noise. With
      `hard=True` the forward pass uses the one-hot of its argmax (each
      child reads exactly one parent) and the backward pass the gradient of
      the soft sample (straight-through estimator). One sample is drawn per
      call (per training step), shared by the whole batch, as an
      architecture sample;
    - at inference (`training=False` or unset), `w[c]` is the one-hot of
      `argmax(theta[c])`: no noise, so predictions and exported models are
      deterministic.

    The temperature lives in a non-trainable scalar variable,
    `temperature_variable`, so a callback
    (`keras_branching.callbacks.TemperatureSchedule`) can anneal it during
    `fit` without retracing the training function. Logits start at zero
    (every parent equally likely); with a single parent there is nothing to
    choose and they are not trainable. The sampling maths run in float32 even
    under a mixed-precision policy; the mixing weights are then cast to the
    parents' dtype.

    Usage penalty (not in the paper; off by default): with
    `usage_penalty=lam > 0`, every training call adds
    `lam * (P * sum_p u_p**2 - 1)` to the model's losses, where
    `u_p = mean_c softmax(theta[c])_p` is the expected share of the children
    that read parent `p`. It is 0 when the parents are used evenly and
    `P - 1` when every child reads one parent, so it keeps the children from
    crowding onto a few parents. It encodes a prior (use all parents about
    equally), not a measure of how well tasks fit together.

    Args:
        num_children: number of output tensors (children), an int >= 1.
        temperature: initial Gumbel-softmax temperature, a number > 0.
        hard: whether training uses the hard one-hot sample with the
            straight-through gradient (default) or the soft mix.
        seed: optional int seed of the Gumbel noise.
        usage_penalty: weight of the usage penalty above, a number >= 0
            (default 0: the paper's router).
        activity_penalty: not in the paper (default 0): in training, adds
            `activity_penalty * mean(|parents|)` (the mean absolute
            activation of the parent tensors) to the model's losses, an L1
            activity penalty on the nodes this router reads, a number >= 0.
        stacked: False (default): the parents come as a list of P tensors
            and the children go out as a list. True (a fused supernet): the
            parents come as one tensor `(batch, P, ...)` (row `p` on axis 1
            is parent `p`, as a `StackedBlock` lays out its copies) and the
            children go out as one tensor `(batch, num_children, ...)`,
            computed by one contraction of the mixing weights with it.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a list of P >= 1 parent tensors, all of one shape; with
            `stacked=True`, one tensor `(batch, P, ...)`.
        training: whether to sample (True) or take the argmax (False).

    Returns:
        A list of `num_children` tensors of the parents' shape; with
        `stacked=True`, one tensor `(batch, num_children, ...)`.

    Raises:
        TypeError: for a non-int `num_children`, a non-bool `hard`, a
            non-int `seed`, or inputs that are not a list of tensors.
        ValueError: for `num_children` < 1, `temperature` <= 0, a negative
            `usage_penalty`, or parents of different shapes.

    Example:

    >>> import numpy as np
    >>> router = GumbelRouter(3, temperature=2.0, seed=0)
    >>> parents = [np.zeros((4, 5), "float32"), np.ones((4, 5), "float32")]
    >>> children = router(parents)
    >>> len(children), tuple(children[0].shape)
    (3, (4, 5))
    >>> router.parent_probabilities().shape
    (3, 2)
    >>> stacked = GumbelRouter(3, stacked=True)
    >>> tuple(stacked(np.ones((4, 2, 5), "float32")).shape)
    (4, 3, 5)
    """

    def __init__(
        self,
        num_children,
        temperature=1.0,
        hard=True,
        seed=None,
        usage_penalty=0.0,
        activity_penalty=0.0,
        stacked=False,
        **kwargs,
    ):
        check_positive_int("num_children", num_children)
        check_positive("temperature", temperature)
        check_non_negative("usage_penalty", usage_penalty)
        check_non_negative("activity_penalty", activity_penalty)
        if not isinstance(hard, bool):
            raise TypeError(f"Expected `hard` to be a bool. Received: hard={hard!r}")
        if not isinstance(stacked, bool):
            raise TypeError(f"Expected `stacked` to be a bool. Received: stacked={stacked!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise TypeError(f"Expected `seed` to be an int or None. Received: seed={seed!r}")
        super().__init__(**kwargs)
        self.num_children = int(num_children)
        self.temperature = float(temperature)
        self.hard = hard
        self.seed = None if seed is None else int(seed)
        self.usage_penalty = float(usage_penalty)
        self.activity_penalty = float(activity_penalty)
        self.stacked = stacked
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def _check_parent_shapes(self, input_shape):
        if self.stacked:
            if (
                not isinstance(input_shape, (list, tuple))
                or len(input_shape) < 2
                or not all(d is None or isinstance(d, int) for d in input_shape)
            ):
                raise TypeError(
                    "Expected the input of a `GumbelRouter(stacked=True)` to be one tensor "
                    f"of shape (batch, parents, ...). Received input of shape {input_shape}"
                )
            if input_shape[1] is None:
                raise ValueError(
                    "Expected a known number of parents (axis 1) for `GumbelRouter(stacked=True)`. "
                    f"Received input of shape {tuple(input_shape)}"
                )
            return [(input_shape[0], *input_shape[2:])] * input_shape[1]
        if not isinstance(input_shape, (list, tuple)) or not all(
            isinstance(s, (list, tuple)) for s in input_shape
        ):
            raise TypeError(
                "Expected `GumbelRouter` inputs to be a list of parent tensors. "
                f"Received inputs of shape {input_shape}"
            )
        if not input_shape:
            raise ValueError("Expected at least one parent tensor. Received an empty list")
        shapes = [tuple(s) for s in input_shape]
        if any(s[1:] != shapes[0][1:] for s in shapes):
            raise ValueError(
                "Expected every parent tensor of `GumbelRouter` to have the same shape. "
                f"Received parents of shapes {shapes}"
            )
        return shapes

    def build(self, input_shape):
        shapes = self._check_parent_shapes(input_shape)
        self.num_parents = len(shapes)
        self.router_logits = self.add_weight(
            shape=(self.num_children, self.num_parents),
            initializer="zeros",
            dtype="float32",
            trainable=self.num_parents > 1,  # one parent: nothing to learn
            name="router_logits",
        )
        mark_architecture_variable(self.router_logits)
        self.temperature_variable = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.temperature),
            dtype="float32",
            trainable=False,
            name="temperature",
        )

    def mixing_weights(self, training=False):
        """The `(num_children, P)` mixing weights, float32.

        One-hot of the argmax of the logits when `training` is false; a
        (hard or soft) Gumbel-softmax sample when it is true.
        """
        logits = ops.cast(self.router_logits, "float32")
        if self.num_parents == 1:  # nothing to choose
            return ops.ones((self.num_children, 1), dtype="float32")
        return gumbel_softmax(
            logits, self.temperature_variable, self.seed_generator, self.hard, training
        )

    def call(self, inputs, training=None):
        if self.stacked:
            return self._call_stacked(inputs, training)
        if not isinstance(inputs, (list, tuple)):
            raise TypeError(
                "Expected `GumbelRouter` inputs to be a list of parent tensors. "
                f"Received: {type(inputs).__name__}"
            )
        if training and self.usage_penalty > 0 and self.num_parents > 1:
            self.add_loss(self.usage_penalty * self.usage_imbalance())
        if training and self.activity_penalty > 0:
            activity = ops.mean(
                ops.stack([ops.mean(ops.abs(ops.cast(x, "float32"))) for x in inputs])
            )
            self.add_loss(self.activity_penalty * activity)
        weights = ops.cast(self.mixing_weights(bool(training)), inputs[0].dtype)
        stacked = ops.stack(list(inputs), axis=0)  # (P, batch, ...)
        mixed = ops.tensordot(weights, stacked, axes=1)  # (children, batch, ...)
        return [mixed[c] for c in range(self.num_children)]

    def _call_stacked(self, inputs, training):
        if training and self.usage_penalty > 0 and self.num_parents > 1:
            self.add_loss(self.usage_penalty * self.usage_imbalance())
        if training and self.activity_penalty > 0:
            # Every parent has one size: the mean over all is the mean of the parents' means.
            self.add_loss(self.activity_penalty * ops.mean(ops.abs(ops.cast(inputs, "float32"))))
        weights = ops.cast(self.mixing_weights(bool(training)), inputs.dtype)
        shape = tuple(inputs.shape)
        flat = ops.reshape(inputs, (-1, self.num_parents, int(np.prod(shape[2:], dtype="int64"))))
        mixed = ops.einsum("cp,bpf->bcf", weights, flat)  # (batch, children, features)
        return ops.reshape(mixed, (-1, self.num_children, *shape[2:]))

    def compute_output_shape(self, input_shape):
        shapes = self._check_parent_shapes(input_shape)
        if self.stacked:
            return (input_shape[0], self.num_children, *input_shape[2:])
        return [shapes[0]] * self.num_children

    def compute_output_spec(self, inputs, training=None):
        if self.stacked:
            shape = self.compute_output_shape(tuple(inputs.shape))
            return keras.KerasTensor(shape, dtype=inputs.dtype)
        shapes = self._check_parent_shapes([tuple(x.shape) for x in inputs])
        return [
            keras.KerasTensor(shapes[0], dtype=inputs[0].dtype) for _ in range(self.num_children)
        ]

    def usage_imbalance(self):
        """`P * sum_p u_p**2 - 1`, `u_p` the mean over children of p(parent p): a scalar.

        0 when the children's probabilities spread evenly over the P
        parents, `P - 1` when all of them are on one parent.
        """
        probabilities = ops.softmax(ops.cast(self.router_logits, "float32"), axis=-1)
        usage = ops.mean(probabilities, axis=0)
        return self.num_parents * ops.sum(usage * usage) - 1.0

    def parent_probabilities(self):
        """softmax(logits) as a numpy array of shape `(num_children, P)`."""
        if not self.built:
            raise ValueError(
                f"The router {self.name!r} is not built yet: call it on its parents first."
            )
        logits = np.asarray(ops.convert_to_numpy(self.router_logits), dtype="float64")
        exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return (exp / exp.sum(axis=-1, keepdims=True)).astype("float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_children": self.num_children,
                "temperature": self.temperature,
                "hard": self.hard,
                "seed": self.seed,
                "usage_penalty": self.usage_penalty,
                "activity_penalty": self.activity_penalty,
                "stacked": self.stacked,
            }
        )
        return config
