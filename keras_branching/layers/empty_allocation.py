"""`EmptyAllocation`: what a task computes in a routed layer where it uses no component."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_branching")
class EmptyAllocation(keras.layers.Layer):
    """Zeros of a fixed shape, one row per input example.

    What a task computes in a routed layer where it uses no component (the
    mean over an empty set of components is zero by definition). Only
    static allocation models contain it, and only in that corner case.

    Args:
        shape: the output shape without the batch axis (a tuple of ints > 0).
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: any tensor; only its batch size is used.

    Returns:
        A tensor of zeros of shape `(batch,) + shape`, in the layer's
        compute dtype.

    Raises:
        ValueError: if `shape` is not a tuple of positive ints.

    Example:

    >>> import numpy as np
    >>> tuple(EmptyAllocation((2, 3))(np.ones((4, 7), "float32")).shape)
    (4, 2, 3)
    """

    def __init__(self, shape, **kwargs):
        if not isinstance(shape, (list, tuple)) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
        ):
            raise ValueError(
                f"Expected `shape` to be a tuple of positive ints. Received: shape={shape!r}"
            )
        super().__init__(**kwargs)
        self.shape = tuple(shape)

    def call(self, inputs):
        return ops.zeros((ops.shape(inputs)[0], *self.shape), dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.shape)

    def get_config(self):
        config = super().get_config()
        config.update({"shape": list(self.shape)})
        return config
