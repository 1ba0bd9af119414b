"""`ArchitectureOptimizer`: architecture parameters get their own optimizer.

Every search method learns architecture parameters (router logits, allocation
logits, the routing policy) next to the network's weights, usually with a
higher learning rate. Keras optimizers have one learning rate, so this module
gives the one mechanism every method uses: the layer that creates an
architecture variable marks it with `mark_architecture_variable`, and
`ArchitectureOptimizer` sends the gradients of marked variables to its
`architecture_optimizer` and all others to its `optimizer`. Variables are
recognised by the marker, never by their names.
"""

import keras

from keras_branching._validation import check_positive

_MARKER = "_keras_branching_architecture"


def mark_architecture_variable(variable):
    """Marks `variable` as an architecture parameter; returns it.

    Call it where the variable is created (in a layer's `build`), so the mark
    is set again whenever the layer is rebuilt, for example after
    `keras.models.load_model`.
    """
    setattr(variable, _MARKER, True)
    return variable


def is_architecture_variable(variable):
    """Whether `variable` was marked by `mark_architecture_variable`."""
    return bool(getattr(variable, _MARKER, False))


def _get_optimizer(optimizer, what):
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer
    try:
        return keras.optimizers.get(optimizer)
    except ValueError as error:
        raise ValueError(
            f"Expected `{what}` to be a Keras optimizer or its name. Received: {what}={optimizer!r}"
        ) from error


@keras.saving.register_keras_serializable(package="keras_branching")
class ArchitectureOptimizer(keras.optimizers.Optimizer):
    """Trains architecture variables with their own optimizer.

    Both optimizers see the gradients of the one loss in the same step:
    variables marked by `mark_architecture_variable` (router logits,
    allocation logits, routing policies) go to `architecture_optimizer`,
    every other variable to `optimizer`. The wrapper is an ordinary Keras
    optimizer: pass it to `compile`, train with `fit` on TensorFlow or JAX
    (it implements the stateless path, as Keras's `LossScaleOptimizer` does),
    under `tf.distribute.MirroredStrategy` and `mixed_float16` (Keras wraps it
    in a `LossScaleOptimizer`), and save and reload the model with it.
    `iterations` and `learning_rate` are those of `optimizer`, so learning-rate
    callbacks act on the weights.

    Args:
        optimizer: optimizer (instance or name) of the network's weights.
        architecture_optimizer: optimizer (instance or name) of the
            architecture variables; a different instance from `optimizer`.
        name: the wrapper's name.

    Example:

    >>> opt = ArchitectureOptimizer(keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-2))
    >>> round(float(keras.ops.convert_to_numpy(opt.architecture_optimizer.learning_rate)), 6)
    0.01
    >>> opt = ArchitectureOptimizer.with_learning_rate("sgd", 0.5)
    >>> type(opt.architecture_optimizer).__name__
    'SGD'
    """

    def __init__(self, optimizer, architecture_optimizer, name=None, **kwargs):
        super().__init__(learning_rate=0.0, name=name, **kwargs)
        optimizer = _get_optimizer(optimizer, "optimizer")
        architecture_optimizer = _get_optimizer(architecture_optimizer, "architecture_optimizer")
        if architecture_optimizer is optimizer:
            raise ValueError(
                "Expected two different optimizer instances for the weights and the "
                f"architecture variables. Received the same instance twice: {optimizer!r}"
            )
        self.inner_optimizer = optimizer
        self.architecture_optimizer = architecture_optimizer

    @classmethod
    def with_learning_rate(cls, optimizer, architecture_learning_rate):
        """An `ArchitectureOptimizer` whose architecture optimizer is a copy of
        `optimizer` (same class and settings) with `architecture_learning_rate`.

        Args:
            optimizer: optimizer instance or name for the weights (an
                instance is copied from its config, never shared).
            architecture_learning_rate: learning rate of the architecture
                variables, > 0.
        """
        check_positive("architecture_learning_rate", architecture_learning_rate)
        optimizer = _get_optimizer(optimizer, "optimizer")
        config = optimizer.get_config()
        weights = optimizer.__class__.from_config(dict(config))
        config["learning_rate"] = float(architecture_learning_rate)
        config["name"] = f"{config.get('name') or 'optimizer'}_architecture"
        return cls(weights, optimizer.__class__.from_config(config))

    def _split(self, values, variables):
        weights, architecture = [], []
        for value, variable in zip(values, variables):
            (architecture if is_architecture_variable(variable) else weights).append(value)
        return weights, architecture

    def build(self, var_list):
        var_list = list(var_list)
        weights, architecture = self._split(var_list, var_list)
        self.inner_optimizer.build(weights)
        self.architecture_optimizer.build(architecture)
        super().build(var_list)

    @property
    def variables(self):
        return (
            self._variables + self.inner_optimizer.variables + self.architecture_optimizer.variables
        )

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is None:
            if not self.built:
                raise ValueError(
                    "When passing `grads` without `variables`, the optimizer must "
                    "already be built. Call `optimizer.build(trainable_variables)` first."
                )
            trainable_variables = self._trainable_variables
        trainable_variables = list(trainable_variables)
        if not self.built:
            self.build(trainable_variables)
        grads = list(grads)
        if len(grads) != len(trainable_variables):
            raise ValueError(
                f"Expected one gradient per variable. Received {len(grads)} gradients "
                f"for {len(trainable_variables)} variables."
            )
        weight_grads, architecture_grads = self._split(grads, trainable_variables)
        weights, architecture = self._split(trainable_variables, trainable_variables)
        if weights:
            self.inner_optimizer.apply(weight_grads, weights)
        if architecture:
            self.architecture_optimizer.apply(architecture_grads, architecture)

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        if not self.built:
            raise ValueError(
                f"To call `stateless_apply`, {self.__class__.__name__} must be built. "
                "Build it via `optimizer.build(trainable_variables)`."
            )
        own = len(self._variables)
        inner = len(self.inner_optimizer.variables)
        # Keras's `LossScaleOptimizer` passes variables, not values, inside its
        # own stateless scope; `.value` reads the scope's current value.
        own_values = [
            v.value if isinstance(v, keras.Variable) else v for v in optimizer_variables[:own]
        ]
        inner_values = list(optimizer_variables[own : own + inner])
        architecture_values = list(optimizer_variables[own + inner :])
        weight_grads, architecture_grads = self._split(grads, self._trainable_variables)
        weight_values, arch_values = self._split(trainable_variables, self._trainable_variables)
        if weight_values:
            weight_values, inner_values = self.inner_optimizer.stateless_apply(
                inner_values, weight_grads, weight_values
            )
        if arch_values:
            arch_values, architecture_values = self.architecture_optimizer.stateless_apply(
                architecture_values, architecture_grads, arch_values
            )
        weight_values, arch_values = iter(weight_values), iter(arch_values)
        new_trainable = [
            next(arch_values) if is_architecture_variable(v) else next(weight_values)
            for v in self._trainable_variables
        ]
        return new_trainable, own_values + list(inner_values) + list(architecture_values)

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    def finalize_variable_values(self, var_list):
        var_list = list(var_list)
        weights, architecture = self._split(var_list, var_list)
        self.inner_optimizer.finalize_variable_values(weights)
        self.architecture_optimizer.finalize_variable_values(architecture)

    def get_config(self):
        return {
            "name": self.name,
            "optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "architecture_optimizer": keras.saving.serialize_keras_object(
                self.architecture_optimizer
            ),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("optimizer", "architecture_optimizer"):
            config[key] = keras.saving.deserialize_keras_object(
                config[key], custom_objects=custom_objects
            )
        return cls(**config)
