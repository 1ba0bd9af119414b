"""`StackGroups`, `GatherGroups`, `SelectGroup`: the branching of a fused tree model.

In a fused model (`BranchedModelBuilder.build(tree, fuse=True)`) every block
depth is one `StackedBlock` over that depth's groups, on tensors laid out
`(batch, groups, ...)`. These layers replace `BranchPoint`: `StackGroups`
repeats the model's input once per group of the first block,
`GatherGroups` gives each group of the next block the row of its parent,
and `SelectGroup` gives a task's head the row of its group. `StackGroups`
and `GatherGroups` record the tree's partition at their depth (`groups`),
so `read_tree` reads the tree back from a fused model.
"""

import keras
from keras import ops


def _check_groups(groups, size):
    if groups is None:
        return None
    if not isinstance(groups, (list, tuple)) or len(groups) != size:
        raise ValueError(
            f"Expected `groups` to be a list of {size} groups of task names. "
            f"Received: groups={groups!r}"
        )
    checked = []
    for group in groups:
        if (
            isinstance(group, str)
            or not isinstance(group, (list, tuple))
            or not group
            or not all(isinstance(t, str) for t in group)
        ):
            raise ValueError(
                "Expected each group to be a non-empty list of task names. "
                f"Received: groups={groups!r}"
            )
        checked.append([str(t) for t in group])
    return checked


def _check_index(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"Expected `{name}` to be an int >= 0. Received: {name}={value!r}")
    return value


@keras.saving.register_keras_serializable(package="keras_branching")
class StackGroups(keras.layers.Layer):
    """Repeats a tensor once per group on a new group axis: `(batch, ...)` -> `(batch, G, ...)`.

    The first layer of a fused tree model: every group of the first block
    reads the model's input.

    Args:
        num_groups: number of groups G, an int >= 1.
        groups: optional list of G groups of task names (the tree's
            partition at the first block), recorded for `read_tree`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a tensor `(batch, ...)`.

    Returns:
        A tensor `(batch, num_groups, ...)`.

    Raises:
        ValueError: for `num_groups` < 1 or `groups` not of G groups.

    Example:

    >>> import numpy as np
    >>> tuple(StackGroups(2, groups=[["a"], ["b"]])(np.ones((4, 3), "float32")).shape)
    (4, 2, 3)
    """

    def __init__(self, num_groups, groups=None, **kwargs):
        if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
            raise ValueError(
                f"Expected `num_groups` an int >= 1. Received: num_groups={num_groups!r}"
            )
        groups = _check_groups(groups, num_groups)
        super().__init__(**kwargs)
        self.num_groups = num_groups
        self.groups = groups

    def call(self, inputs):
        x = ops.expand_dims(inputs, 1)
        if self.num_groups == 1:
            return x
        return ops.repeat(x, self.num_groups, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_groups, *input_shape[1:])

    def get_config(self):
        config = super().get_config()
        config.update({"num_groups": self.num_groups, "groups": self.groups})
        return config


@keras.saving.register_keras_serializable(package="keras_branching")
class GatherGroups(keras.layers.Layer):
    """Takes rows along the group axis: `(batch, G_in, ...)` -> `(batch, len(indices), ...)`.

    Where a fused tree branches, group `i` of the next block reads row
    `indices[i]` (its parent group) of the block before. Gradients of
    rows read several times add up, as with `BranchPoint`.

    Args:
        indices: a non-empty list of ints >= 0, the input row of each
            output row.
        groups: optional list of `len(indices)` groups of task names (the
            tree's partition at the block this feeds), recorded for
            `read_tree`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a tensor `(batch, G_in, ...)` with `G_in > max(indices)`.

    Returns:
        A tensor `(batch, len(indices), ...)`.

    Raises:
        ValueError: for empty or negative `indices`, `groups` not of one
            group per index, or an input with too few groups.

    Example:

    >>> import numpy as np
    >>> x = np.arange(4, dtype="float32").reshape(1, 2, 2)
    >>> GatherGroups([0, 0, 1])(x).numpy().tolist()
    [[[0.0, 1.0], [0.0, 1.0], [2.0, 3.0]]]
    """

    def __init__(self, indices, groups=None, **kwargs):
        if (
            isinstance(indices, (str, bytes))
            or not isinstance(indices, (list, tuple))
            or not indices
        ):
            raise ValueError(
                f"Expected `indices` to be a non-empty list of ints. Received: indices={indices!r}"
            )
        indices = [_check_index("indices", i) for i in indices]
        groups = _check_groups(groups, len(indices))
        super().__init__(**kwargs)
        self.indices = indices
        self.groups = groups

    def build(self, input_shape):
        if input_shape[1] is not None and max(self.indices) >= input_shape[1]:
            raise ValueError(
                f"Expected an input with more than {max(self.indices)} groups (axis 1) for "
                f"indices={self.indices}. Received input shape: {tuple(input_shape)}"
            )
        self.built = True

    def call(self, inputs):
        return ops.take(inputs, ops.convert_to_tensor(self.indices, "int32"), axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], len(self.indices), *input_shape[2:])

    def get_config(self):
        config = super().get_config()
        config.update({"indices": self.indices, "groups": self.groups})
        return config


@keras.saving.register_keras_serializable(package="keras_branching")
class SelectGroup(keras.layers.Layer):
    """Takes one row of the group axis: `(batch, G, ...)` -> `(batch, ...)`.

    In a fused tree model each task's head reads the row of its group.

    Args:
        index: the row, an int >= 0.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a tensor `(batch, G, ...)` with `G > index`.

    Returns:
        The tensor `inputs[:, index]`.

    Raises:
        ValueError: for a negative `index`.

    Example:

    >>> import numpy as np
    >>> x = np.arange(4, dtype="float32").reshape(1, 2, 2)
    >>> SelectGroup(1)(x).numpy().tolist()
    [[2.0, 3.0]]
    """

    def __init__(self, index, **kwargs):
        index = _check_index("index", index)
        super().__init__(**kwargs)
        self.index = index

    def call(self, inputs):
        return ops.take(inputs, self.index, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *input_shape[2:])

    def get_config(self):
        config = super().get_config()
        config.update({"index": self.index})
        return config


@keras.saving.register_keras_serializable(package="keras_branching")
class JoinGroups(keras.layers.Layer):
    """Stacks G tensors on a new group axis: G x `(batch, ...)` -> `(batch, G, ...)`.

    In a fused routing model (`RoutingModelBuilder.build(plan, fuse=True)`)
    the experts of one layer read different gated mixes; this joins them
    as the rows of the layer's `StackedBlock` input.

    Args:
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a list of G >= 1 tensors of one shape `(batch, ...)`.

    Returns:
        The tensor `(batch, G, ...)` whose row `g` is `inputs[g]`.

    Raises:
        ValueError: if `inputs` is not a non-empty list of tensors of one
            shape.

    Example:

    >>> import numpy as np
    >>> a, b = np.zeros((1, 2), "float32"), np.ones((1, 2), "float32")
    >>> JoinGroups()([a, b]).numpy().tolist()
    [[[0.0, 0.0], [1.0, 1.0]]]
    """

    def _check(self, shapes):
        if not isinstance(shapes, (list, tuple)) or not shapes:
            raise ValueError(
                f"Expected a non-empty list of tensors to join. Received input shapes: {shapes!r}"
            )
        inner = {tuple(s[1:]) for s in shapes}
        if len(inner) != 1:
            raise ValueError(
                "Expected tensors of one shape (after the batch axis) to join. "
                f"Received input shapes: {list(shapes)}"
            )

    def build(self, input_shape):
        self._check(input_shape)
        self.built = True

    def call(self, inputs):
        return ops.stack(list(inputs), axis=1)

    def compute_output_shape(self, input_shape):
        self._check(input_shape)
        return (input_shape[0][0], len(input_shape), *input_shape[0][1:])
