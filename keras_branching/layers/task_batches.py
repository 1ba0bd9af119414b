"""`JoinTaskBatches` and `SplitTaskBatches`: one call of a shared block on several tasks' batches.

In a model with one input per task, a block copy shared by several tasks
runs once, on their batches joined along the batch axis (one call, one set
of weights); `SplitTaskBatches` then cuts its output back into the member
tasks' rows. The split sizes come from the member tasks' own tensors at run
time, so batches of any (and of different) sizes work, on every backend,
under `jit_compile`, after a `.keras` reload and in an exported SavedModel.
"""

import keras
from keras import ops

_GRADIENT_SCALES = (None, "mean")


def _batch_sum(shapes):
    sizes = [s[0] for s in shapes]
    return None if any(s is None for s in sizes) else int(sum(sizes))


@keras.saving.register_keras_serializable(package="keras_branching")
class JoinTaskBatches(keras.layers.Layer):
    """Joins the batches of several tasks into one, along the batch axis.

    The rows of the first tensor come first, then those of the second, and
    so on; `SplitTaskBatches`, given the same tensors in the same order as
    references, cuts them apart again.

    Args:
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a list of tensors (at least one) of one shape apart from
            the batch axis.

    Returns:
        One tensor whose batch size is the sum of the inputs' batch sizes.

    Raises:
        ValueError: if `inputs` is not a non-empty list, or the tensors
            differ in shape apart from the batch axis.

    Example:

    >>> import numpy as np
    >>> joined = JoinTaskBatches()([np.zeros((2, 3), "float32"), np.ones((4, 3), "float32")])
    >>> tuple(joined.shape)
    (6, 3)
    """

    def _check_shapes(self, shapes):
        if (
            not isinstance(shapes, (list, tuple))
            or not shapes
            or not isinstance(shapes[0], (list, tuple))
        ):
            raise ValueError(
                "Expected `JoinTaskBatches` to be called on a non-empty list of tensors. "
                f"Received input shape: {shapes!r}"
            )
        rest = {tuple(s[1:]) for s in shapes}
        if len(rest) > 1:
            raise ValueError(
                "Expected tensors of one shape apart from the batch axis. Received shapes: "
                f"{[tuple(s) for s in shapes]}"
            )
        return [tuple(s) for s in shapes]

    def build(self, input_shape):
        self._check_shapes(input_shape)
        self.built = True

    def call(self, inputs):
        inputs = list(inputs)
        if len(inputs) == 1:
            return inputs[0]
        return ops.concatenate(inputs, axis=0)

    def compute_output_shape(self, input_shape):
        shapes = self._check_shapes(input_shape)
        return (_batch_sum(shapes), *shapes[0][1:])


@keras.saving.register_keras_serializable(package="keras_branching")
class SplitTaskBatches(keras.layers.Layer):
    """Cuts a joined batch back into the rows of its tasks.

    The first input is the joined tensor (for example the output of a block
    run on a `JoinTaskBatches` output); the others are one reference tensor
    per task, in the order the tasks were joined, whose batch sizes (read at
    run time with `keras.ops.shape`) give the number of rows of each task.
    Only their batch sizes are used, so the references can be the tasks'
    model inputs.

    With `group_sizes`, consecutive tasks stay together: piece `i` holds the
    rows of the `group_sizes[i]` tasks after those of the earlier pieces.

    Args:
        group_sizes: `None` (one piece per task) or a list of ints >= 1, the
            number of consecutive tasks in each piece.
        gradient_scale: `None` (the plain gradient) or `"mean"` (the
            gradient into the joined tensor is divided by the number of
            pieces, as `BranchPoint(gradient_scale="mean")` does for a
            tree's branches). Forward values are unchanged either way.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a list `[joined, reference_1, ..., reference_n]`.

    Returns:
        A list of tensors, one per piece, each with the joined tensor's
        shape apart from the batch axis.

    Raises:
        TypeError: if `group_sizes` is not a list of ints.
        ValueError: for a group size below 1, a bad `gradient_scale`, or
            group sizes that do not add up to the number of references.

    Example:

    >>> import numpy as np
    >>> joined = np.arange(12, dtype="float32").reshape(6, 2)
    >>> refs = [np.zeros((2, 5)), np.zeros((1, 5)), np.zeros((3, 5))]
    >>> first, rest = SplitTaskBatches(group_sizes=[1, 2])([joined, *refs])
    >>> tuple(first.shape), tuple(rest.shape)
    ((2, 2), (4, 2))
    """

    def __init__(self, group_sizes=None, gradient_scale=None, **kwargs):
        if group_sizes is not None:
            if isinstance(group_sizes, (str, bytes)) or not isinstance(group_sizes, (list, tuple)):
                raise TypeError(
                    "Expected `group_sizes` to be None or a list of ints. "
                    f"Received: group_sizes={group_sizes!r}"
                )
            for size in group_sizes:
                if isinstance(size, bool) or not isinstance(size, int):
                    raise TypeError(
                        "Expected `group_sizes` to be a list of ints. "
                        f"Received: group_sizes={group_sizes!r}"
                    )
            if not group_sizes or any(size < 1 for size in group_sizes):
                raise ValueError(
                    "Expected `group_sizes` to be a non-empty list of ints >= 1. "
                    f"Received: group_sizes={group_sizes!r}"
                )
            group_sizes = [int(size) for size in group_sizes]
        if gradient_scale not in _GRADIENT_SCALES:
            raise ValueError(
                f"Expected `gradient_scale` to be one of {_GRADIENT_SCALES}. "
                f"Received: gradient_scale={gradient_scale!r}"
            )
        super().__init__(**kwargs)
        self.group_sizes = group_sizes
        self.gradient_scale = gradient_scale

    def _groups(self, num_references):
        sizes = self.group_sizes or [1] * num_references
        if sum(sizes) != num_references:
            raise ValueError(
                f"Expected `group_sizes` to add up to the number of reference tensors "
                f"({num_references}). Received: group_sizes={self.group_sizes}"
            )
        bounds, start = [], 0
        for size in sizes:
            bounds.append((start, start + size))
            start += size
        return bounds

    def _check_shapes(self, shapes):
        if (
            not isinstance(shapes, (list, tuple))
            or len(shapes) < 2
            or not isinstance(shapes[0], (list, tuple))
        ):
            raise ValueError(
                "Expected `SplitTaskBatches` to be called on a list [joined, reference, ...] "
                f"of at least two tensors. Received input shape: {shapes!r}"
            )
        return [tuple(s) for s in shapes]

    def build(self, input_shape):
        shapes = self._check_shapes(input_shape)
        self._groups(len(shapes) - 1)
        self.built = True

    def call(self, inputs):
        joined, *references = inputs
        if self.gradient_scale == "mean":
            count = len(self._groups(len(references)))
            if count > 1:
                # Forward: exactly `joined`. Backward: the gradient divided by `count`.
                frozen = ops.stop_gradient(joined)
                joined = frozen + (joined - frozen) / ops.cast(count, joined.dtype)
        sizes = [ops.shape(r)[0] for r in references]
        pieces, start = [], 0
        for first, last in self._groups(len(references)):
            stop = start
            for size in sizes[first:last]:
                stop = stop + size
            pieces.append(joined[start:stop])
            start = stop
        return pieces

    def compute_output_shape(self, input_shape):
        shapes = self._check_shapes(input_shape)
        joined, references = shapes[0], shapes[1:]
        return [
            (_batch_sum(references[first:last]), *joined[1:])
            for first, last in self._groups(len(references))
        ]

    def compute_output_spec(self, inputs):
        shapes = self.compute_output_shape([tuple(x.shape) for x in inputs])
        return [keras.KerasTensor(shape, dtype=inputs[0].dtype) for shape in shapes]

    def get_config(self):
        config = super().get_config()
        config.update({"group_sizes": self.group_sizes, "gradient_scale": self.gradient_scale})
        return config
