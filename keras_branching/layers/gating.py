"""The one gated sum (softmax gates over routed tensors) of `GatedRoute` and `SupernetRoute`."""

from keras import ops


def gate_weights(logits, mask=None):
    """Softmax of `logits` over the last axis, in float32, optionally over `mask` only.

    Written out rather than `ops.softmax`, which warns on a single input.

    Args:
        logits: float tensor `(batch, k)`.
        mask: optional tensor broadcastable to `logits`, 1 (or True) for the
            entries that take part; the others get weight 0. At least one
            entry per row must take part.

    Returns:
        Float32 weights of the shape of `logits`, each row summing to 1.
    """
    logits = ops.cast(logits, "float32")
    if mask is not None:
        active = ops.cast(mask, "float32") > 0.5
        logits = ops.where(active, logits, ops.min(logits, axis=-1, keepdims=True))
    logits = logits - ops.stop_gradient(ops.max(logits, axis=-1, keepdims=True))
    weights = ops.exp(logits)
    if mask is not None:
        weights = weights * ops.cast(active, "float32")
    return weights / ops.sum(weights, axis=-1, keepdims=True)


def gated_sum(logits, inputs, mask=None):
    """`sum_i g_i x_i` with `g = softmax(logits)` (over `mask` only, if given).

    The gates are computed in float32 (see `gate_weights`), then cast to the
    dtype of the inputs, so the sum runs in the inputs' precision.

    Args:
        logits: gate logits `(batch, k)`, one per input and example.
        inputs: a list of `k` tensors of one shape `(batch, ...)`.
        mask: optional `(k,)` or `(batch, k)` tensor, 1 for the inputs that
            take part (see `gate_weights`).

    Returns:
        A tensor of the shape and dtype of `inputs[0]`.

    Example:

    >>> import numpy as np
    >>> xs = [np.full((1, 2), v, "float32") for v in (0.0, 1.0, 9.0)]
    >>> out = gated_sum(np.zeros((1, 3), "float32"), xs, mask=np.array([1.0, 1.0, 0.0]))
    >>> np.asarray(out)  # the mean of the first two inputs
    array([[0.5, 0.5]], dtype=float32)
    """
    gates = ops.cast(gate_weights(logits, mask), inputs[0].dtype)
    extra_axes = len(inputs[0].shape) - 2
    output = None
    for i, x in enumerate(inputs):
        weight = ops.reshape(gates[:, i : i + 1], (-1,) + (1,) * (extra_axes + 1))
        output = weight * x if output is None else output + weight * x
    return output


def check_query_shape(shape, subject):
    """Raises unless `shape` is `(batch, features)` with known features.

    `subject` names the query in the message ("the gate query", "query 0").
    """
    if len(shape) != 2 or shape[-1] is None:
        raise ValueError(
            f"Expected {subject} to have shape (batch, features) with a known "
            f"number of features. Received: query shape={shape}"
        )


def check_same_shapes(shapes, what, item):
    """Raises unless every shape in `shapes` agrees after the batch axis.

    `what` names the tensors in the message ("gated input"), `item` one of
    them by index ("input").
    """
    for i, shape in enumerate(shapes[1:], start=1):
        if shape[1:] != shapes[0][1:]:
            raise ValueError(
                f"Expected every {what} to have the same shape. Received: "
                f"{item} 0 of shape {shapes[0]} and {item} {i} of shape {shape}"
            )
