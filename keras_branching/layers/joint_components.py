"""`JointComponents`: shared components applied once to every task's batch, joined."""

import keras
from keras import ops

_REDUCTIONS = ("stack", "none")


@keras.saving.register_keras_serializable(package="keras_branching")
class JointComponents(keras.layers.Layer):
    """Applies shared components once to every task's batch, joined.

    Every task's tensor goes through the same component weights, so the
    per-task batches are concatenated, each component runs once on the
    joined batch and the result is split back per task. The graph then
    holds each component once instead of once per task, which keeps
    tracing fast with many tasks. Only valid for components that treat
    examples independently (convolutions, pooling, GroupNormalization;
    not BatchNormalization). The routed network of learned allocation is
    made of these layers and `AllocationMask`s.

    Args:
        components: list of Keras layers (or their serialised configs),
            with outputs of one shape.
        reduce: `"stack"` (each task gets its component outputs stacked on
            axis 1, the input of an `AllocationMask`) or `"none"` (exactly
            one component; each task gets its output).
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: a list of per-task tensors, with one shape but the batch.
        training: passed to the components.

    Returns:
        A list of per-task tensors.

    Raises:
        ValueError: for an unknown `reduce`, no component (or more than one
            with `reduce="none"`), or components whose outputs differ in
            shape.

    Example:

    >>> import keras, numpy as np
    >>> joint = JointComponents([keras.layers.Dense(3), keras.layers.Dense(3)])
    >>> [tuple(y.shape) for y in joint([np.ones((2, 4)), np.ones((5, 4))])]
    [(2, 2, 3), (5, 2, 3)]
    """

    def __init__(self, components, reduce="stack", **kwargs):
        if reduce not in _REDUCTIONS:
            raise ValueError(
                f"Expected `reduce` to be one of {_REDUCTIONS}. Received: reduce={reduce!r}"
            )
        if isinstance(components, (str, bytes)) or not isinstance(components, (list, tuple)):
            raise TypeError(
                "Expected `components` to be a list of Keras layers. "
                f"Received: components={components!r}"
            )
        components = [
            c if isinstance(c, keras.layers.Layer) else keras.saving.deserialize_keras_object(c)
            for c in components
        ]
        if not components or (reduce == "none" and len(components) != 1):
            raise ValueError(
                "Expected at least one component (exactly one with reduce='none'). "
                f"Received {len(components)} components with reduce={reduce!r}"
            )
        super().__init__(**kwargs)
        self.components = components
        self.reduce = reduce

    def build(self, input_shape):
        shape = (None, *input_shape[0][1:])
        outputs = []
        for component in self.components:
            if not component.built:
                component.build(shape)
            outputs.append(tuple(component.compute_output_shape(shape))[1:])
        if len(set(outputs)) > 1:
            raise ValueError(
                f"Expected the components of {self.name!r} to give outputs of one shape. "
                f"Received shapes {outputs}"
            )

    def call(self, inputs, training=None):
        inputs = list(inputs)
        joined = ops.concatenate(inputs, axis=0) if len(inputs) > 1 else inputs[0]
        outputs = [component(joined, training=training) for component in self.components]
        output = outputs[0] if self.reduce == "none" else ops.stack(outputs, axis=1)
        if len(inputs) == 1:
            return [output]
        results, start = [], 0
        for x in inputs:
            size = ops.shape(x)[0]
            results.append(output[start : start + size])
            start = start + size
        return results

    def compute_output_shape(self, input_shape):
        shape = (None, *input_shape[0][1:])
        inner = tuple(self.components[0].compute_output_shape(shape))[1:]
        if self.reduce == "stack":
            inner = (len(self.components), *inner)
        return [(s[0], *inner) for s in input_shape]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "components": [keras.saving.serialize_keras_object(c) for c in self.components],
                "reduce": self.reduce,
            }
        )
        return config
