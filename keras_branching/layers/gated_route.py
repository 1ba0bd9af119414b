"""`GatedRoute`: the softmax-gated sum of a route's sub-network outputs."""

import keras
from keras import ops

from keras_branching.layers.gating import (
    check_query_shape,
    check_same_shapes,
    gate_weights,
    gated_sum,
)


@keras.saving.register_keras_serializable(package="keras_branching")
class GatedRoute(keras.layers.Layer):
    """Mixes the outputs of a route's sub-networks with a softmax gate.

    The layer behind every route of a `RoutingPlan` with more than one
    member (share routing, MMoE): given a gate query `q` (a batch of
    vectors) and `num_inputs` tensors `x_1, ..., x_k` of one shape, it
    computes gate weights `g = softmax(q W + b)` (one weight per input and
    example) and returns `sum_i g_i x_i`. The gate is computed in float32
    whatever the layer's dtype policy.

    With the default zero kernel initialiser every gate starts as the plain
    mean of its inputs, so copies of the layer need no seeds to differ: the
    gradients that reach them differ.

    Args:
        num_inputs: number of gated inputs (the route's members), an int
            of at least 1. With 1 the layer is the identity.
        use_bias: whether the gate logits have a bias.
        kernel_initializer: initializer of the gate kernel `W` (shape
            `(query_dim, num_inputs)`); default `"zeros"`.
        bias_initializer: initializer of the gate bias; default `"zeros"`.
        kernel_regularizer: optional regularizer of the gate kernel.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a list `[query, x_1, ..., x_k]`: `query` of shape
            `(batch, query_dim)`, every `x_i` of one shape `(batch, ...)`.

    Returns:
        A tensor of the shape of `x_1`: the gated sum.

    Example:

    >>> import numpy as np
    >>> query = np.ones((2, 3), "float32")
    >>> a, b = np.zeros((2, 4), "float32"), np.ones((2, 4), "float32")
    >>> np.asarray(GatedRoute(2)([query, a, b]))[0]  # zero kernel: the mean
    array([0.5, 0.5, 0.5, 0.5], dtype=float32)
    """

    def __init__(
        self,
        num_inputs,
        use_bias=True,
        kernel_initializer="zeros",
        bias_initializer="zeros",
        kernel_regularizer=None,
        **kwargs,
    ):
        if isinstance(num_inputs, bool) or not isinstance(num_inputs, int):
            raise TypeError(
                f"Expected `num_inputs` to be an int. Received: num_inputs={num_inputs!r}"
            )
        if num_inputs < 1:
            raise ValueError(f"Expected `num_inputs` >= 1. Received: num_inputs={num_inputs}")
        super().__init__(**kwargs)
        self.num_inputs = num_inputs
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def _check_shapes(self, input_shapes):
        if not isinstance(input_shapes, (list, tuple)) or len(input_shapes) != self.num_inputs + 1:
            count = len(input_shapes) if isinstance(input_shapes, (list, tuple)) else 1
            raise ValueError(
                f"Expected a list of {self.num_inputs + 1} tensors (the gate query, "
                f"then {self.num_inputs} inputs). Received {count} tensor(s)"
            )
        query, *routed = [tuple(s) for s in input_shapes]
        check_query_shape(query, "the gate query")
        check_same_shapes(routed, "gated input", "input")
        return query, routed

    def build(self, input_shapes):
        query, _ = self._check_shapes(input_shapes)
        self.kernel = self.add_weight(
            name="kernel",
            shape=(query[-1], self.num_inputs),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.num_inputs,), initializer=self.bias_initializer
            )
        else:
            self.bias = None

    def _logits(self, query):
        logits = ops.matmul(ops.cast(query, "float32"), ops.cast(self.kernel, "float32"))
        if self.bias is not None:
            logits = logits + ops.cast(self.bias, "float32")
        return logits

    def gates(self, query):
        """The gate weights for `query`, float32 of shape `(batch, num_inputs)`."""
        return gate_weights(self._logits(query))

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != self.num_inputs + 1:
            raise ValueError(
                f"Expected a list of {self.num_inputs + 1} tensors (the gate query, "
                f"then {self.num_inputs} inputs). Received: {inputs!r}"
            )
        query, *routed = inputs
        return gated_sum(self._logits(query), routed)

    def compute_output_shape(self, input_shapes):
        _, routed = self._check_shapes(input_shapes)
        return routed[0]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_inputs": self.num_inputs,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            }
        )
        return config
