"""`BranchPoint`: the place where a branching tree splits."""

import keras
from keras import ops

_GRADIENT_SCALES = (None, "mean")


@keras.saving.register_keras_serializable(package="keras_branching")
class BranchPoint(keras.layers.Layer):
    """Splits one tensor into `num_branches` identical branches.

    A `BranchPoint` marks where a branching tree splits: the shared block
    before it feeds several copies of the next block (or several task
    heads). Its forward pass is the identity, repeated, so a model built
    with it computes exactly what the same graph without it would; it exists
    so that the split shows in `summary()` and plots and can be found when
    a model is read back.

    With `gradient_scale="mean"` the gradient flowing back into the shared
    trunk is the *mean* of the branches' gradients instead of their sum.
    Without it, a trunk shared by many branches receives a gradient that
    grows with the number of branches, so its effective learning rate is
    larger than that of the branches; with it, a trunk shared by 10 tasks
    learns at the same rate as one shared by 2. Forward values are unchanged.

    Args:
        num_branches: number of output branches, an int >= 1.
        gradient_scale: `None` (sum of the branches' gradients, the plain
            autodiff behaviour) or `"mean"` (divide the gradient into the
            trunk by `num_branches`).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: one tensor.

    Returns:
        A list of `num_branches` tensors equal to `inputs`.

    Example:

    >>> import numpy as np
    >>> left, right = BranchPoint(2)(np.ones((1, 3), "float32"))
    >>> left.shape
    TensorShape([1, 3])
    """

    def __init__(self, num_branches, gradient_scale=None, **kwargs):
        if isinstance(num_branches, bool) or not isinstance(num_branches, int):
            raise TypeError(
                f"Expected `num_branches` to be an int. Received: num_branches={num_branches!r}"
            )
        if num_branches < 1:
            raise ValueError(f"Expected `num_branches` >= 1. Received: num_branches={num_branches}")
        if gradient_scale not in _GRADIENT_SCALES:
            raise ValueError(
                f"Expected `gradient_scale` to be one of {_GRADIENT_SCALES}. "
                f"Received: gradient_scale={gradient_scale!r}"
            )
        super().__init__(**kwargs)
        self.num_branches = num_branches
        self.gradient_scale = gradient_scale

    def call(self, inputs):
        if isinstance(inputs, (list, tuple)):
            raise ValueError(
                "Expected a single tensor as input to `BranchPoint`. "
                f"Received a {type(inputs).__name__} of {len(inputs)} tensors"
            )
        outputs = inputs
        if self.gradient_scale == "mean" and self.num_branches > 1:
            # Forward: x + 0 (exactly x, bit for bit). Backward: d/dx = 1/n.
            frozen = ops.stop_gradient(inputs)
            outputs = frozen + (inputs - frozen) / ops.cast(self.num_branches, inputs.dtype)
        # Each use of the tensor adds its gradient, so the trunk receives
        # the sum (or, scaled above, the mean) of the branches' gradients.
        return [outputs] * self.num_branches

    def compute_output_shape(self, input_shape):
        return [tuple(input_shape)] * self.num_branches

    def compute_output_spec(self, inputs):
        return [
            keras.KerasTensor(inputs.shape, dtype=inputs.dtype) for _ in range(self.num_branches)
        ]

    def get_config(self):
        config = super().get_config()
        config.update({"num_branches": self.num_branches, "gradient_scale": self.gradient_scale})
        return config
