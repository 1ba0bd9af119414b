"""`StackedBlock`: the G copies of a block as one layer, computed at once.

A branching model runs the copies of a block side by side; with many small
copies the step time is per-op overhead. `StackedBlock` holds the weights of
`num_groups` copies of one block on a group axis and computes every copy in
one op per sublayer: a batched matrix product for `Dense`, a grouped
convolution for `Conv2D`, per-group statistics and scales for the
normalisations, and the group axis folded into the batch for weightless
layers (activations, pooling, dropout, flatten...).

Layout: batch first, then the group axis: `(batch, num_groups, ...)`; row
`g` along axis 1 is what copy `g` computes on its own input.
"""

import copy

import keras
import numpy as np
from keras import ops

# Weightless layers that act on each example alone: the group axis is folded
# into the batch axis around them.
_FOLDED = tuple(
    getattr(keras.layers, name)
    for name in (
        "Activation",
        "ReLU",
        "LeakyReLU",
        "ELU",
        "Softmax",
        "Identity",
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
        "Flatten",
        "Reshape",
        "Permute",
        "RepeatVector",
        "MaxPooling1D",
        "MaxPooling2D",
        "MaxPooling3D",
        "AveragePooling1D",
        "AveragePooling2D",
        "AveragePooling3D",
        "GlobalAveragePooling1D",
        "GlobalAveragePooling2D",
        "GlobalAveragePooling3D",
        "GlobalMaxPooling1D",
        "GlobalMaxPooling2D",
        "GlobalMaxPooling3D",
        "ZeroPadding1D",
        "ZeroPadding2D",
        "ZeroPadding3D",
        "Cropping1D",
        "Cropping2D",
        "Cropping3D",
        "UpSampling1D",
        "UpSampling2D",
        "UpSampling3D",
    )
    if hasattr(keras.layers, name)
)


def variable_numpy(value):
    """A numpy copy of a Keras variable's (or any tensor's) value.

    Reads the backend value's own `numpy()` where it has one: numpy 2's
    `__array__` protocol on a TensorFlow variable warns (a
    DeprecationWarning about the `copy` keyword).
    """
    if isinstance(value, keras.Variable):
        value = value.value
    if hasattr(value, "numpy"):  # a TensorFlow variable or eager tensor
        return np.array(value.numpy())
    return np.array(keras.ops.convert_to_numpy(value))


def block_leaves(layer):
    """The layers a block computes with, in order: `keras.Sequential` blocks flattened.

    Args:
        layer: a Keras layer or `keras.Sequential`.

    Returns:
        A list of layers (no `InputLayer`).
    """
    if isinstance(layer, keras.Sequential):
        return [leaf for sub in layer.layers for leaf in block_leaves(sub)]
    return [layer]


def block_weights(layer):
    """A block's weights in the order `StackedBlock` stacks them (leaf by leaf).

    Args:
        layer: a built copy of a block.

    Returns:
        A list of Keras variables.
    """
    return [w for leaf in block_leaves(layer) for w in leaf.weights]


def _uses_extras(leaf):
    """The name of a regulariser or constraint `leaf` sets, or None."""
    if getattr(leaf, "activity_regularizer", None) is not None:
        return "activity_regularizer"
    for key, value in leaf.get_config().items():
        if key.endswith(("_regularizer", "_constraint")) and value is not None:
            return key
    return None


def _leaf_reason(leaf):
    """Why `leaf` (a non-container layer) cannot be stacked, or None."""
    kind = type(leaf).__name__
    if type(leaf) in _FOLDED:
        return None
    if type(leaf) is keras.layers.Dense:
        if getattr(leaf, "lora_rank", None) or getattr(leaf, "quantization_mode", None):
            return f"{kind} {leaf.name!r} uses LoRA or quantisation"
    elif type(leaf) is keras.layers.Conv2D:
        if leaf.data_format != "channels_last":
            return (
                f"{kind} {leaf.name!r} has data_format={leaf.data_format!r} (needs channels_last)"
            )
        if leaf.groups != 1:
            return f"{kind} {leaf.name!r} is a grouped convolution (groups={leaf.groups})"
    elif type(leaf) is keras.layers.BatchNormalization:
        if leaf.axis not in (-1,) or leaf.synchronized or getattr(leaf, "renorm", False):
            return f"{kind} {leaf.name!r} normalises axis={leaf.axis} or is synchronized/renorm"
    elif type(leaf) is keras.layers.LayerNormalization:
        if leaf.axis not in (-1, [-1], (-1,)) or leaf.rms_scaling:
            return f"{kind} {leaf.name!r} normalises axis={leaf.axis} or uses rms_scaling"
    elif type(leaf) is keras.layers.GroupNormalization:
        if leaf.axis != -1:
            return f"{kind} {leaf.name!r} normalises axis={leaf.axis}"
    else:
        return f"{kind} {leaf.name!r} has no stacked form"
    extra = _uses_extras(leaf)
    if extra is not None:
        return f"{kind} {leaf.name!r} sets {extra}"
    return None


def stack_reason(layer):
    """Why the block `layer` cannot be stacked, or None if it can.

    Args:
        layer: a Keras layer (one copy of a block).

    Returns:
        None, or a short sentence naming the sublayer and the reason.

    Example:

    >>> import keras
    >>> stack_reason(keras.layers.Dense(3)) is None
    True
    >>> stack_reason(keras.layers.LSTM(3))
    "LSTM 'lstm...' has no stacked form"
    """
    if isinstance(layer, keras.Model) and not isinstance(layer, keras.Sequential):
        return f"{type(layer).__name__} {layer.name!r} is a model other than keras.Sequential"
    for leaf in block_leaves(layer):
        if isinstance(leaf, keras.Model) and not isinstance(leaf, keras.Sequential):
            return f"{type(leaf).__name__} {leaf.name!r} is a model other than keras.Sequential"
        reason = _leaf_reason(leaf)
        if reason is not None:
            return reason
    return None


def reseed_config(config, offset):
    """Returns a copy of a layer config with every integer seed shifted by `offset`.

    Cloning a layer from its config copies its initialisers' seeds, so
    every copy of a block would start from the same weights; shifting the
    seeds keeps each copy reproducible but different. Used by the builder
    (copies of a layer instance given as a block) and by `StackedBlock`
    (one initialisation per group).

    Example:

    >>> reseed_config({"kernel_initializer": {"config": {"seed": 3}}, "units": 4}, 2)
    {'kernel_initializer': {'config': {'seed': 5}}, 'units': 4}
    """
    if isinstance(config, dict):
        return {
            k: (v + offset if k == "seed" and isinstance(v, int) else reseed_config(v, offset))
            for k, v in config.items()
        }
    if isinstance(config, list):
        return [reseed_config(v, offset) for v in config]
    return config


def _unbuilt(config):
    """A layer config without what would build the layer on deserialisation."""
    if isinstance(config, dict):
        return {
            k: _unbuilt(v)
            for k, v in config.items()
            if k not in ("build_config", "build_input_shape", "compile_config")
        }
    if isinstance(config, list):
        return [_unbuilt(v) for v in config]
    return config


def _group_shape(x, num_groups, rank):
    """`[1, G, 1, ..., 1, -1]`: a per-group vector broadcast over `(batch, G, ..., C)`."""
    return [1, num_groups] + [1] * (rank - 3) + [-1]


class _Untracked:
    """Holds a layer out of Keras's sight (not a sublayer of its owner)."""

    def __init__(self, layer):
        self.layer = layer


class _Op:
    """One leaf of the block, stacked: its variables keyed by the leaf's weight names."""

    def __init__(self, leaf, num_groups):
        self.leaf = leaf
        self.num_groups = num_groups
        self.vars = {}

    def call(self, owner, x, training):
        raise NotImplementedError


class _DenseOp(_Op):
    def call(self, owner, x, training):
        kernel = self.vars["kernel"]
        if len(x.shape) == 3:
            y = ops.einsum("bgi,gio->bgo", x, kernel)
        else:
            y = ops.einsum("bg...i,gio->bg...o", x, kernel)
        if "bias" in self.vars:
            y = y + ops.reshape(self.vars["bias"], _group_shape(y, self.num_groups, len(y.shape)))
        return self.leaf.activation(y)


class _Conv2DOp(_Op):
    def call(self, owner, x, training):
        leaf, g = self.leaf, self.num_groups
        _, _, height, width, channels = x.shape
        # (B, G, H, W, C) -> (B, H, W, G*C): copy g reads channels [g*C, (g+1)*C).
        folded = ops.reshape(ops.transpose(x, (0, 2, 3, 1, 4)), (-1, height, width, g * channels))
        kernel = self.vars["kernel"]  # (G, kh, kw, C, O)
        kh, kw, _, out = kernel.shape[1:]
        kernel = ops.reshape(ops.transpose(kernel, (1, 2, 3, 0, 4)), (kh, kw, channels, g * out))
        y = ops.conv(
            folded,
            kernel,
            strides=leaf.strides,
            padding=leaf.padding,
            data_format="channels_last",
            dilation_rate=leaf.dilation_rate,
        )
        _, h2, w2, _ = y.shape
        y = ops.transpose(ops.reshape(y, (-1, h2, w2, g, out)), (0, 3, 1, 2, 4))
        if "bias" in self.vars:
            y = y + ops.reshape(self.vars["bias"], (1, g, 1, 1, out))
        return leaf.activation(y)


def _affine(op, y, rank):
    shape = _group_shape(y, op.num_groups, rank)
    if "gamma" in op.vars:
        y = y * ops.cast(ops.reshape(op.vars["gamma"], shape), y.dtype)
    if "beta" in op.vars:
        y = y + ops.cast(ops.reshape(op.vars["beta"], shape), y.dtype)
    return y


class _BatchNormOp(_Op):
    def call(self, owner, x, training):
        leaf, rank = self.leaf, len(x.shape)
        dtype = x.dtype
        x = ops.cast(x, "float32")
        shape = _group_shape(x, self.num_groups, rank)
        moving_mean, moving_var = self.vars["moving_mean"], self.vars["moving_variance"]
        if training and owner.trainable:
            axes = [0, *range(2, rank - 1)]
            mean, variance = ops.moments(x, axes=axes)  # (G, C), float32
            momentum = leaf.momentum
            for moving, value in ((moving_mean, mean), (moving_var, variance)):
                current = ops.cast(moving, "float32")
                moving.assign(ops.cast(current * momentum + value * (1.0 - momentum), moving.dtype))
        else:
            mean, variance = moving_mean, moving_var
        mean = ops.reshape(ops.cast(mean, "float32"), shape)
        variance = ops.reshape(ops.cast(variance, "float32"), shape)
        y = (x - mean) * ops.rsqrt(variance + leaf.epsilon)
        return ops.cast(_affine(self, y, rank), dtype)


class _LayerNormOp(_Op):
    def call(self, owner, x, training):
        dtype = x.dtype
        x = ops.cast(x, "float32")
        mean, variance = ops.moments(x, axes=[-1], keepdims=True)
        y = (x - mean) * ops.rsqrt(variance + self.leaf.epsilon)
        return ops.cast(_affine(self, y, len(x.shape)), dtype)


class _GroupNormOp(_Op):
    def call(self, owner, x, training):
        dtype, rank = x.dtype, len(x.shape)
        x = ops.cast(x, "float32")
        channels = x.shape[-1]
        groups = channels if self.leaf.groups == -1 else self.leaf.groups
        inner = list(x.shape[2:-1])
        split = ops.reshape(x, (-1, self.num_groups, *inner, groups, channels // groups))
        axes = [*range(2, rank - 1), rank]  # the inner axes and each group's channels
        mean, variance = ops.moments(split, axes=axes, keepdims=True)
        y = (split - mean) * ops.rsqrt(variance + self.leaf.epsilon)
        y = ops.reshape(y, (-1, self.num_groups, *inner, channels))
        return ops.cast(_affine(self, y, rank), dtype)


_OPS = {
    keras.layers.Dense: _DenseOp,
    keras.layers.Conv2D: _Conv2DOp,
    keras.layers.BatchNormalization: _BatchNormOp,
    keras.layers.LayerNormalization: _LayerNormOp,
    keras.layers.GroupNormalization: _GroupNormOp,
}


def _fold(layer, x, num_groups, training):
    """Applies a weightless per-example layer with the group axis folded into the batch."""
    inner = [d if d is not None else ops.shape(x)[i + 2] for i, d in enumerate(x.shape[2:])]
    y = layer(ops.reshape(x, (-1, *inner)), training=training)
    return ops.reshape(y, (-1, num_groups, *y.shape[1:]))


@keras.saving.register_keras_serializable(package="keras_branching")
class StackedBlock(keras.layers.Layer):
    """`num_groups` copies of a block in one layer, computed side by side.

    Holds every weight of the block with a leading group axis (a `Dense`
    kernel of shape `(in, out)` becomes `(num_groups, in, out)`) and
    computes all copies at once: `Dense` as one batched product
    (`einsum("bgi,gio->bgo")`), `Conv2D` as one grouped convolution
    (the groups folded into the channels; on TensorFlow Keras runs it
    through XLA), `BatchNormalization` with per-group statistics and
    moving averages, `LayerNormalization` and `GroupNormalization` per
    example with per-group scales, and weightless per-example layers
    (activations, pooling, `Dropout`, `Flatten`, `Reshape`...) with the
    group axis folded into the batch. A `keras.Sequential` block of these
    is stacked sublayer by sublayer. `stack_reason(layer)` says why a block
    cannot be stacked (another layer kind, regularisers or constraints,
    channels_first convolutions...); the constructor raises then.

    Copy `g` computes exactly what the block alone computes on row `g`
    with the weights `group_weights(g)` (within float rounding); dropout
    noise differs in training (it is random either way).

    Args:
        block: the block: a Keras layer (one copy; its config is used, not
            its weights) or its `keras.saving.serialize_keras_object` dict.
        num_groups: number of copies G, an int >= 1.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a tensor of shape `(batch, num_groups, ...)`: row `g` is
            the input of copy `g`.
        training: whether in training mode (batch statistics, dropout).

    Returns:
        A tensor of shape `(batch, num_groups, ...)`, the copies' outputs.

    Raises:
        TypeError: if `block` is neither a layer nor a layer config dict.
        ValueError: for `num_groups` < 1 or a block that cannot be stacked.

    Example:

    >>> import keras, numpy as np
    >>> stacked = StackedBlock(keras.layers.Dense(4, activation="relu"), num_groups=3)
    >>> y = stacked(np.ones((2, 3, 5), "float32"))
    >>> tuple(y.shape), [tuple(w.shape) for w in stacked.weights]
    ((2, 3, 4), [(3, 5, 4), (3, 4)])
    """

    def __init__(self, block, num_groups, **kwargs):
        if isinstance(block, keras.layers.Layer):
            block = keras.saving.serialize_keras_object(block)
        if not isinstance(block, dict):
            raise TypeError(
                "Expected `block` to be a Keras layer or its serialised config dict. "
                f"Received: block={block!r} (of type {type(block).__name__})"
            )
        if isinstance(num_groups, bool) or not isinstance(num_groups, int):
            raise TypeError(
                f"Expected `num_groups` to be an int. Received: num_groups={num_groups!r}"
            )
        if num_groups < 1:
            raise ValueError(f"Expected `num_groups` >= 1. Received: num_groups={num_groups}")
        super().__init__(**kwargs)
        self.block = _unbuilt(block)
        self.num_groups = num_groups
        template = self.make_copy()
        reason = stack_reason(template)
        if reason is not None:
            raise ValueError(f"Cannot stack block {template.name!r}: {reason}.")
        self._template = _Untracked(template)  # its weights are not this layer's
        leaves = block_leaves(template)
        # Weightless leaves run as themselves (tracked, so their seed
        # generators are saved); the others as stacked ops.
        self._folded = [leaf for leaf in leaves if type(leaf) in _FOLDED]
        self._ops = tuple(
            None if type(leaf) in _FOLDED else _OPS[type(leaf)](leaf, num_groups) for leaf in leaves
        )

    def make_copy(self, copy_index=0):
        """A fresh, unbuilt copy of the block (initialiser seeds shifted by `copy_index`)."""
        config = reseed_config(copy.deepcopy(self.block), copy_index)
        return keras.saving.deserialize_keras_object(config)

    def build(self, input_shape):
        group_shape = (input_shape[0], *input_shape[2:])
        # Initial values: the weights of G fresh copies, each with its own
        # initialiser seed, as the separate copies would start.
        copies = []
        for g in range(self.num_groups):
            layer = self.make_copy(g)
            if not layer.built:
                layer.build(group_shape)
            copies.append(layer)
        per_copy = [block_leaves(layer) for layer in copies]
        for index, op in enumerate(self._ops):
            if op is None:
                continue
            leaf = per_copy[0][index]
            for w_index, weight in enumerate(leaf.weights):
                values = np.stack(
                    [variable_numpy(leaves[index].weights[w_index]) for leaves in per_copy]
                )
                op.vars[weight.name] = self.add_weight(
                    shape=values.shape,
                    initializer=keras.initializers.Constant(0.0),
                    dtype=weight.dtype,
                    trainable=weight.trainable,
                    # As the copy's: e.g. BN moving statistics stay float32
                    # under a mixed precision policy.
                    autocast=getattr(weight, "_autocast", True),
                    name=f"{leaf.name}_{weight.name}",
                )
                op.vars[weight.name].assign(values)
        self.built = True

    def _slots(self):
        """`[(op, weight name)]` in the order of `block_weights` of a copy."""
        return [(op, name) for op in self._ops if op is not None for name in op.vars]

    def group_weights(self, group):
        """Copy `group`'s weights as numpy arrays, in the order of `block_weights(copy)`."""
        self._check_group(group)
        return [variable_numpy(op.vars[name])[group] for op, name in self._slots()]

    def set_group_weights(self, group, weights):
        """Sets copy `group`'s weights from arrays in the order of `block_weights(copy)`.

        Raises:
            ValueError: for a list of the wrong length or shapes.
        """
        self._check_group(group)
        slots = self._slots()
        weights = list(weights)
        if len(weights) != len(slots):
            raise ValueError(
                f"Expected {len(slots)} weights for one copy of the block. "
                f"Received: {len(weights)} weights"
            )
        for (op, name), value in zip(slots, weights):
            variable = op.vars[name]
            value = variable_numpy(value)
            if value.shape != tuple(variable.shape[1:]):
                raise ValueError(
                    f"Expected weight {name!r} of shape {tuple(variable.shape[1:])}. "
                    f"Received shape: {value.shape}"
                )
            full = variable_numpy(variable)
            full[group] = value
            variable.assign(full)

    def _check_group(self, group):
        if (
            isinstance(group, bool)
            or not isinstance(group, int)
            or not 0 <= group < self.num_groups
        ):
            raise ValueError(
                f"Expected `group` an int in [0, {self.num_groups}). Received: group={group!r}"
            )

    def call(self, inputs, training=None):
        x = inputs
        folded = iter(self._folded)
        for op in self._ops:
            if op is None:
                x = _fold(next(folded), x, self.num_groups, training)
            else:
                x = op.call(self, x, training)
        return x

    def compute_output_shape(self, input_shape):
        group_shape = (input_shape[0], *input_shape[2:])
        out = self._template.layer.compute_output_shape(group_shape)
        return (out[0], self.num_groups, *out[1:])

    def get_config(self):
        config = super().get_config()
        config.update({"block": self.block, "num_groups": self.num_groups})
        return config
