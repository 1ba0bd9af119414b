"""Learned parameter allocation (Gumbel-Matrix routing): `AllocationBuilder`.

Method 4 of the project's methods page: Maziarz et al., "Flexible Multi-task
Networks by Learning Parameter Allocation" (arXiv 1910.04915). Every routed
layer offers a list of components to every task; an `AllocationMask` per
routed layer learns which components each task uses. The result is a
per-layer task-by-component boolean allocation, which `export` turns into a
plain static model.
"""

import re

import keras
import numpy as np
from keras import ops
from keras.src.losses import loss as loss_module  # tf.distribute loss scaling helpers

from keras_branching._validation import (
    check_non_negative,
    check_positive,
    check_tasks,
    sanitize_name,
)
from keras_branching.layers.allocation_mask import AllocationMask

_REDUCTIONS = ("stack", "mean", "none")
_VALID_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _is_weight_decayed(variable):
    """Weight decay covers every trainable weight but biases and allocation logits."""
    name = variable.name.split("/")[-1].split(":")[0]
    return name not in ("bias", "allocation_logits")


@keras.saving.register_keras_serializable(package="keras_branching")
class EmptyAllocation(keras.layers.Layer):
    """Zeros of a fixed shape, one row per input example.

    What a task computes in a routed layer where it uses no component (the
    mean over an empty set of components is zero by definition). Only
    exported static models contain it, and only in that corner case.

    Args:
        shape: the output shape without the batch axis (a tuple of ints).
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: any tensor; only its batch size is used.

    Returns:
        A tensor of zeros of shape `(batch,) + shape`.

    Example:

    >>> import numpy as np
    >>> EmptyAllocation((2, 3))(np.ones((4, 7), "float32")).shape
    TensorShape([4, 2, 3])
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


@keras.saving.register_keras_serializable(package="keras_branching")
class JointComponents(keras.layers.Layer):
    """Applies shared components once to every task's batch, joined.

    Every task's tensor goes through the same component weights, so the
    per-task batches are concatenated, each component runs once on the
    joined batch and the result is split back per task. The graph then
    holds each component once instead of once per task, which keeps
    tracing fast with many tasks. Only valid for components that treat
    examples independently (convolutions, pooling, GroupNormalization;
    not BatchNormalization).

    Args:
        components: list of Keras layers, with outputs of one shape.
        reduce: `"stack"` (each task gets its component outputs stacked on
            axis 1, the input of an `AllocationMask`), `"mean"` (their mean:
            every task uses every component) or `"none"` (one component;
            each task gets its output).
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: a list of per-task tensors, with one shape but the batch.
        training: passed to the components.

    Returns:
        A list of per-task tensors.

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
        joined = ops.concatenate(list(inputs), axis=0) if len(inputs) > 1 else inputs[0]
        outputs = [component(joined, training=training) for component in self.components]
        if self.reduce == "none":
            output = outputs[0]
        else:
            output = ops.stack(outputs, axis=1)
            if self.reduce == "mean":
                output = ops.mean(output, axis=1)
        if len(inputs) == 1:
            return [output]
        results, start = [], 0
        for x in inputs:
            size = ops.shape(x)[0]
            results.append(output[start : start + size])
            start = start + size
        return results

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "components": [keras.saving.serialize_keras_object(c) for c in self.components],
                "reduce": self.reduce,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_branching")
class AllocationModel(keras.Model):
    """A functional multi-task model trained as in the allocation paper.

    Built by `AllocationBuilder`; used like any functional model. Its
    training step (TensorFlow backend) differs from Keras's in two ways:
    the allocation logits (weights named `"allocation_logits"`) are updated
    by their own optimizer, with their own learning rate, and the loss adds
    an L2 penalty `weight_decay * 0.5 * ||w||^2` per task on every other
    trainable weight except biases (as the official code adds it to every
    task's loss). Compile it with `AllocationBuilder.compile`.
    """

    def compile(self, optimizer="adam", allocation_optimizer=None, weight_decay=0.0, **kwargs):
        """Configures the model for training.

        Args:
            optimizer: optimizer of every weight but the allocation logits.
            allocation_optimizer: optimizer of the allocation logits; `None`
                is allowed only for a model without allocation logits.
            weight_decay: L2 penalty coefficient, >= 0.
            **kwargs: the other arguments of `keras.Model.compile`.
        """
        if keras.backend.backend() != "tensorflow":
            raise RuntimeError(
                "Training an `AllocationModel` needs the TensorFlow backend. "
                f"Received: backend={keras.backend.backend()!r}"
            )
        weight_decay = check_non_negative("weight_decay", weight_decay)
        super().compile(optimizer=optimizer, **kwargs)
        self.weight_decay = weight_decay
        if self.allocation_variables and allocation_optimizer is None:
            raise ValueError(
                "Expected an `allocation_optimizer` for a model with allocation logits. "
                "Received: allocation_optimizer=None"
            )
        self.allocation_optimizer = (
            None if allocation_optimizer is None else keras.optimizers.get(allocation_optimizer)
        )
        # Build both optimizers now, outside the compiled training function:
        # creating slots inside it is slow for large models.
        self.optimizer.build(self._model_weights())
        if self.allocation_optimizer is not None and self.allocation_variables:
            self.allocation_optimizer.build(self.allocation_variables)

    def _model_weights(self):
        """Every trainable weight but the allocation logits."""
        allocation = {id(v) for v in self.allocation_variables}
        return [v for v in self.trainable_weights if id(v) not in allocation]

    @property
    def allocation_variables(self):
        """The trainable allocation logits of every `AllocationMask`."""
        return [v for v in self.trainable_weights if v.name == "allocation_logits"]

    @property
    def num_tasks(self):
        return len(self.output) if isinstance(self.output, dict) else 1

    def weight_penalty(self):
        """The L2 penalty of the current weights (0 without weight decay)."""
        if not getattr(self, "weight_decay", 0.0):
            return 0.0
        decayed = [v for v in self.trainable_weights if _is_weight_decayed(v)]
        total = ops.sum(ops.stack([ops.sum(ops.square(ops.cast(v, "float32"))) for v in decayed]))
        return self.weight_decay * 0.5 * self.num_tasks * total

    def train_step(self, data):
        import tensorflow as tf

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        allocation = self.allocation_variables
        weights = self._model_weights()
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self._compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
            )
            # Under tf.distribute Keras scales the loss by 1 / replicas: log
            # it unscaled, and scale the penalty the same way.
            self._loss_tracker.update_state(
                loss_module.unscale_loss_for_distribution(loss),
                sample_weight=tf.shape(tf.nest.flatten(x)[0])[0],
            )
            total = loss + loss_module.scale_loss_for_distribution(self.weight_penalty())
            # Under mixed_float16 the weights' optimizer is a LossScaleOptimizer:
            # it wants the gradients of the scaled loss, and unscales them itself.
            scaled = self.optimizer.scale_loss(total)
        gradients = tape.gradient(scaled, weights + allocation)
        allocation_gradients = gradients[len(weights) :]
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer) and allocation:
            # The allocation optimizer is a plain one: unscale its gradients
            # here, with the scale of this step (read before the update may
            # change it), and zero them where the scaled loss overflowed.
            scale = ops.cast(self.optimizer.scale_loss(1.0), "float32")
            allocation_gradients = [
                ops.where(ops.isfinite(g), ops.divide(g, scale), ops.zeros_like(g))
                for g in allocation_gradients
            ]
        self.optimizer.apply_gradients(zip(gradients[: len(weights)], weights))
        if allocation:
            self.allocation_optimizer.apply_gradients(zip(allocation_gradients, allocation))
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


class AllocationBuilder:
    """Builds learned-allocation networks, their baselines and their export.

    The network of Maziarz et al. (2019): a stack of layers, some of them
    *routed*. A routed layer is a list of component factories; every task
    may use any subset of its components, and its output is the mean of the
    components it uses. The other layers are shared by every task. Each
    component (and shared layer) exists once, with one set of weights, and
    is applied to every task's tensor. Each routed layer ends in an
    `AllocationMask`, which learns the task-by-component allocation.

    The model has one input and one output per task, in dicts keyed by task
    name, so a training step carries one batch per task, as in the paper
    (see `task_batches`). `compile` gives the allocation logits their own
    Adam optimizer and learning rate, and adds the paper's weight decay on
    every other weight but biases. After training, `export` builds the
    result: a plain static model in which each task runs only its allocated
    components (no masks, noise or unused components), with the trained
    weights, computing what the allocation network computes at inference.

    The same builder also gives the two baselines of the paper on the same
    components: `build_shared` (every task uses every component, one set
    of weights) and `build_independent` (every task has its own copy of
    the whole network).

    Args:
        inputs: the per-task input shape (a tuple without the batch axis),
            the same for every task, or a dict of shapes keyed by task name.
        layers: list of layers, in order. Each entry is either a zero-argument
            callable returning a fresh Keras layer (a layer shared by every
            task), or a list of such callables (a routed layer: its
            components, which must give outputs of one shape).
        tasks: list of `Task`; each task's head follows the last layer.
        initial_probability: initial probability that a task uses a
            component (0.97 in the paper's Omniglot setup).
        temperature: initial Gumbel-softmax temperature of every
            `AllocationMask` (anneal it with a `TemperatureSchedule`).
        budget: optional budget of every `AllocationMask` (see there).
        budget_weight: weight of the budget penalty.
        seed: optional int; mask `i` draws its noise with seed `seed + i`.

    Example:

    >>> import keras
    >>> from keras_branching import Task
    >>> dense = lambda: keras.layers.Dense(8, activation="relu")
    >>> builder = AllocationBuilder(
    ...     inputs=(8,),
    ...     layers=[[dense, dense, keras.layers.Identity], dense],
    ...     tasks=[
    ...         Task("a", head=lambda: keras.layers.Dense(1), loss="mse"),
    ...         Task("b", head=lambda: keras.layers.Dense(1), loss="mse"),
    ...     ],
    ... )
    >>> model = builder.build()
    >>> [a.shape for a in builder.allocations(model)]
    [(2, 3)]
    >>> static = builder.export(model)
    >>> sorted(static.output)
    ['a', 'b']
    """

    def __init__(
        self,
        inputs,
        layers,
        tasks,
        initial_probability=0.97,
        temperature=1.0,
        budget=None,
        budget_weight=1.0,
        seed=None,
    ):
        tasks = check_tasks(tasks)
        names = [t.name for t in tasks]
        for name in names:
            if not _VALID_NAME.match(name):
                raise ValueError(
                    "Expected task names made of letters, digits and `_.-` (Keras names "
                    f"inputs, outputs and metrics after them). Received: {name!r}"
                )
        self.tasks = list(tasks)
        self.input_shapes = self._check_inputs(inputs, names)
        self.layers = self._check_layers(layers)
        # Validates the mask arguments once, with the layer's own messages.
        AllocationMask(
            len(tasks),
            1,
            initial_probability=initial_probability,
            temperature=temperature,
            budget=budget,
            budget_weight=budget_weight,
            seed=seed,
        )
        self.initial_probability = initial_probability
        self.temperature = temperature
        self.budget = budget
        self.budget_weight = budget_weight
        self.seed = seed

    @staticmethod
    def _check_inputs(inputs, names):
        def is_shape(shape):
            return isinstance(shape, (tuple, list)) and all(
                d is None or (isinstance(d, int) and not isinstance(d, bool) and d > 0)
                for d in shape
            )

        if is_shape(inputs):
            return {name: tuple(inputs) for name in names}
        if isinstance(inputs, dict) and all(is_shape(s) for s in inputs.values()):
            if set(inputs) != set(names):
                raise ValueError(
                    f"Expected one input shape per task {names}. "
                    f"Received shapes for {sorted(inputs)}"
                )
            return {name: tuple(inputs[name]) for name in names}
        raise TypeError(
            "Expected `inputs` to be a shape tuple of positive ints (without the "
            f"batch axis) or a dict of them keyed by task. Received: inputs={inputs!r}"
        )

    @staticmethod
    def _check_layers(layers):
        if isinstance(layers, (str, bytes)) or not isinstance(layers, (list, tuple)) or not layers:
            raise TypeError(
                "Expected `layers` to be a non-empty list whose entries are layer "
                f"factories or lists of component factories. Received: layers={layers!r}"
            )

        def check_factory(factory, where):
            if isinstance(factory, keras.layers.Layer) or not callable(factory):
                raise TypeError(
                    f"Expected {where} to be a zero-argument callable returning a fresh "
                    f"Keras layer (not a layer instance). Received: {factory!r}"
                )

        checked = []
        for i, entry in enumerate(layers):
            if isinstance(entry, (list, tuple)):
                if not entry:
                    raise ValueError(
                        f"Expected routed layer {i} to offer at least one component. "
                        f"Received: layers[{i}]={entry!r}"
                    )
                for k, factory in enumerate(entry):
                    check_factory(factory, f"layers[{i}][{k}]")
                checked.append(list(entry))
            else:
                check_factory(entry, f"layers[{i}]")
                checked.append(entry)
        return checked

    # Structure.

    @property
    def task_names(self):
        """The task names, in the builder's order."""
        return tuple(t.name for t in self.tasks)

    @property
    def routed_layers(self):
        """Indices of the routed layers in `layers`."""
        return [i for i, entry in enumerate(self.layers) if isinstance(entry, list)]

    @property
    def num_components(self):
        """Number of components of each routed layer, in order."""
        return [len(self.layers[i]) for i in self.routed_layers]

    def _make(self, factory, name):
        layer = factory()
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                "Expected a layer factory to return a Keras layer. "
                f"Received: {layer!r} (of type {type(layer).__name__}) for {name!r}"
            )
        layer.name = name
        return layer

    def _make_inputs(self):
        return {name: keras.Input(self.input_shapes[name], name=name) for name in self.task_names}

    def _heads(self, features, model=None):
        """Each task's head on its features: fresh heads, or those of `model`."""
        outputs = {}
        for task in self.tasks:
            if model is not None:
                outputs[task.name] = model.get_layer(f"head_{sanitize_name(task.name)}")(
                    features[task.name]
                )
                continue
            head = task.head()
            if not isinstance(head, keras.layers.Layer):
                raise TypeError(
                    f"Expected the head of task {task.name!r} to return a Keras layer. "
                    f"Received: {head!r} (of type {type(head).__name__})"
                )
            head.name = f"head_{sanitize_name(task.name)}"
            outputs[task.name] = head(features[task.name])
        return outputs

    @staticmethod
    def _check_same_shapes(index, tensors):
        shapes = [tuple(t.shape[1:]) for t in tensors]
        if len(set(shapes)) > 1:
            raise ValueError(
                f"Expected the components of routed layer {index} to give outputs of "
                f"one shape. Received shapes {shapes}"
            )
        return shapes[0]

    # Building.

    def build(self, compile=True, **compile_kwargs):
        """Builds the allocation network (an `AllocationModel`).

        Args:
            compile: whether to compile it with `compile` (default True).
            **compile_kwargs: arguments for `compile`.

        Returns:
            An `AllocationModel` with inputs and outputs in dicts keyed by task.
        """
        return self._build_joint(masked=True, compile=compile, **compile_kwargs)

    def _build_joint(self, masked, compile=True, **compile_kwargs):
        """The allocation network (`masked`) or the shared one, on joined batches."""
        inputs = self._make_inputs()
        names = self.task_names
        features = [inputs[t] for t in names]
        for index, entry in enumerate(self.layers):
            if not isinstance(entry, list):
                layer = self._make(entry, f"layer{index + 1}")
                features = JointComponents([layer], "none", name=f"layer{index + 1}_joint")(
                    features
                )
                continue
            components = [
                self._make(factory, f"layer{index + 1}_c{k + 1}") for k, factory in enumerate(entry)
            ]
            joint = JointComponents(
                components,
                "stack" if masked else "mean",
                name=f"layer{index + 1}_components",
            )
            features = joint(features)
            if masked:
                mask_index = self.routed_layers.index(index)
                mask = AllocationMask(
                    len(names),
                    len(components),
                    initial_probability=self.initial_probability,
                    temperature=self.temperature,
                    budget=self.budget,
                    budget_weight=self.budget_weight,
                    seed=None if self.seed is None else self.seed + mask_index,
                    name=f"layer{index + 1}_allocation",
                )
                features = mask(features)
        outputs = self._heads(dict(zip(names, features)))
        name = "allocation_network" if masked else "shared_network"
        model = AllocationModel(inputs, outputs, name=name)
        if compile:
            self.compile(model, **compile_kwargs)
        return model

    def _build_static(self, allocations, get_layer, model_class, name, source=None):
        """The static graph of `allocations`; `get_layer(index, k, task)` gives layers.

        Heads are fresh, or those of the model `source`.
        """
        inputs = self._make_inputs()
        features = dict(inputs)
        for index, entry in enumerate(self.layers):
            if not isinstance(entry, list):
                features = {t: get_layer(index, None, t)(features[t]) for t in self.task_names}
                continue
            allocation = allocations[self.routed_layers.index(index)]
            shape = None
            new = {}
            for row, t in enumerate(self.task_names):
                active = [
                    get_layer(index, k, t)(features[t]) for k in np.flatnonzero(allocation[row])
                ]
                if len(active) > 1:
                    shape = self._check_same_shapes(index, active)
                    new[t] = keras.layers.Average(name=f"layer{index + 1}_mean_{sanitize_name(t)}")(
                        active
                    )
                elif active:
                    new[t] = active[0]
            for t in self.task_names:
                if t not in new:
                    if shape is None:
                        shape = self._component_shape(index, get_layer, features[t], t)
                    empty = EmptyAllocation(
                        shape, name=f"layer{index + 1}_empty_{sanitize_name(t)}"
                    )
                    new[t] = empty(features[t])
            features = new
        return model_class(inputs, self._heads(features, source), name=name)

    @staticmethod
    def _component_shape(index, get_layer, tensor, task):
        """Output shape of routed layer `index` (of its first component)."""
        return tuple(get_layer(index, 0, task).compute_output_spec(tensor).shape[1:])

    def check_allocations(self, allocations):
        """Raises a clear error unless `allocations` fit the routed layers.

        Returns:
            The allocations as boolean numpy arrays.
        """
        expected = [(len(self.tasks), c) for c in self.num_components]
        if not isinstance(allocations, (list, tuple)) or len(allocations) != len(expected):
            raise ValueError(
                f"Expected one allocation matrix per routed layer ({len(expected)}), "
                f"of shapes {expected}. Received: {allocations!r}"
            )
        checked = [np.asarray(a).astype(bool) for a in allocations]
        for i, (a, shape) in enumerate(zip(checked, expected)):
            if a.shape != shape:
                raise ValueError(
                    f"Expected allocation {i} of shape {shape} (tasks x components). "
                    f"Received shape {a.shape}"
                )
        return checked

    def build_static(self, allocations, compile=True, **compile_kwargs):
        """A fresh static network in which each task uses the given components.

        Args:
            allocations: one boolean (num_tasks x num_components) matrix per
                routed layer.
            compile: whether to compile it (default True).
            **compile_kwargs: arguments for `compile`.

        Returns:
            An `AllocationModel` without masks, with freshly initialised
            weights; components nobody uses are not built.
        """
        allocations = self.check_allocations(allocations)
        cache = {}

        def get_layer(index, k, task):
            if (index, k) not in cache:
                factory = self.layers[index] if k is None else self.layers[index][k]
                name = f"layer{index + 1}" + ("" if k is None else f"_c{k + 1}")
                cache[index, k] = self._make(factory, name)
            return cache[index, k]

        model = self._build_static(allocations, get_layer, AllocationModel, "static_network")
        if compile:
            self.compile(model, **compile_kwargs)
        return model

    def build_shared(self, compile=True, **compile_kwargs):
        """The fully shared baseline: every task uses every component.

        The same network as `build_static` with every component allocated to
        every task (one set of weights), built on joined batches like the
        allocation network, so it traces fast with many tasks.
        """
        return self._build_joint(masked=False, compile=compile, **compile_kwargs)

    def build_independent(self, compile=True, **compile_kwargs):
        """The independent baseline: each task has its own copy of everything."""
        ones = [np.ones((len(self.tasks), c), bool) for c in self.num_components]
        cache = {}

        def get_layer(index, k, task):
            if (index, k, task) not in cache:
                factory = self.layers[index] if k is None else self.layers[index][k]
                name = f"layer{index + 1}" + ("" if k is None else f"_c{k + 1}")
                cache[index, k, task] = self._make(factory, f"{name}_{sanitize_name(task)}")
            return cache[index, k, task]

        model = self._build_static(ones, get_layer, AllocationModel, "independent_network")
        if compile:
            self.compile(model, **compile_kwargs)
        return model

    # Reading and exporting the result.

    def _masks(self, model):
        masks = []
        for index in self.routed_layers:
            try:
                mask = model.get_layer(f"layer{index + 1}_allocation")
            except ValueError:
                mask = None
            if not isinstance(mask, AllocationMask):
                raise ValueError(
                    "Expected an allocation network built by this builder's `build`. "
                    f"Received the model {model.name!r}, without the AllocationMask "
                    f"'layer{index + 1}_allocation'"
                )
            masks.append(mask)
        return masks

    def allocations(self, model):
        """The greedy allocation of each routed layer of an allocation network.

        Returns:
            A list of boolean numpy arrays of shape (num_tasks, num_components).
        """
        return [mask.allocation() for mask in self._masks(model)]

    def probabilities(self, model):
        """The probability that each task uses each component, per routed layer.

        Read from the `AllocationMask` logits of an allocation network; the
        greedy allocation (`allocations`) is where it is at least 0.5.

        Returns:
            A list of float numpy arrays of shape (num_tasks, num_components).
        """
        return [mask.probabilities() for mask in self._masks(model)]

    def shared_components(self, model_or_allocations):
        """How many components each pair of tasks shares, over all routed layers.

        Args:
            model_or_allocations: an allocation network, or its allocations.

        Returns:
            A (num_tasks x num_tasks) int numpy array; the diagonal holds the
            number of components each task uses.
        """
        allocations = model_or_allocations
        if isinstance(allocations, keras.Model):
            allocations = self.allocations(allocations)
        allocations = self.check_allocations(allocations)
        return sum(a.astype(int) @ a.T.astype(int) for a in allocations)

    def plot(self, model_or_allocations, components=None, path=None, title=None):
        """Draws the allocation of every routed layer, task by component.

        With an allocation network, each cell's colour is the probability
        that the task uses the component and a dot marks the greedy
        allocation (what `export` keeps); with allocations, used cells are
        dark. See `keras_branching.plotting.plot_allocation`.

        Args:
            model_or_allocations: an allocation network built by `build`,
                or its allocations (one boolean matrix per routed layer).
            components: optional component names: one list for every routed
                layer, or one list per routed layer; by default `c1`,
                `c2`... as in the layers' names (`layer3_c1`).
            path: optional file name; the figure is saved there.
            title: optional figure title.

        Returns:
            The matplotlib `Figure`.
        """
        from keras_branching.plotting import plot_allocation

        probabilities = None
        if isinstance(model_or_allocations, keras.Model):
            allocations = self.allocations(model_or_allocations)
            probabilities = self.probabilities(model_or_allocations)
        else:
            allocations = self.check_allocations(model_or_allocations)
        if components is None:
            components = [[f"c{k + 1}" for k in range(c)] for c in self.num_components]
        return plot_allocation(
            allocations,
            probabilities,
            tasks=self.task_names,
            components=components,
            layer_names=[f"layer {i + 1}" for i in self.routed_layers],
            path=path,
            title=title,
        )

    def export(self, model):
        """The static model of a trained allocation network.

        Each task runs only the components its greedy allocation selects:
        the trained layers are reused (so weights are the trained ones), the
        masks are gone and components no task uses are left out. The result
        is a plain functional `keras.Model` (inputs and outputs in dicts
        keyed by task) whose outputs equal `model`'s at inference.

        Args:
            model: an allocation network built by `build`.

        Returns:
            A `keras.Model`, not compiled.
        """
        allocations = self.allocations(model)

        def get_layer(index, k, task):
            if k is None:
                return model.get_layer(f"layer{index + 1}_joint").components[0]
            return model.get_layer(f"layer{index + 1}_components").components[k]

        return self._build_static(
            allocations, get_layer, keras.Model, "allocated_network", source=model
        )

    # Training.

    def compile(
        self,
        model,
        learning_rate=1e-4,
        allocation_learning_rate=2e-3,
        weight_decay=3e-4,
        **compile_kwargs,
    ):
        """Compiles a model of this builder with the paper's optimisers.

        Two Adam optimisers on one loss: `learning_rate` for the weights and
        `allocation_learning_rate` for the allocation logits; L2 weight decay
        on every weight but biases and allocation logits; each task's loss,
        metrics and weight.

        Args:
            model: an `AllocationModel` from `build`, `build_static`,
                `build_shared` or `build_independent`.
            learning_rate: Adam learning rate of the weights (paper: 1e-4).
            allocation_learning_rate: Adam learning rate of the allocation
                logits (paper: 2e-3).
            weight_decay: L2 coefficient (paper: 3e-4).
            **compile_kwargs: other arguments of `keras.Model.compile`.
        """
        check_positive("learning_rate", learning_rate)
        check_positive("allocation_learning_rate", allocation_learning_rate)
        if not isinstance(model, AllocationModel):
            raise TypeError(
                "Expected a model built by `AllocationBuilder`. "
                f"Received: {model!r} (of type {type(model).__name__})"
            )
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            allocation_optimizer=keras.optimizers.Adam(allocation_learning_rate),
            weight_decay=weight_decay,
            loss={t.name: t.loss for t in self.tasks},
            loss_weights={t.name: t.loss_weight for t in self.tasks},
            metrics={t.name: list(t.metrics) for t in self.tasks if t.metrics},
            **compile_kwargs,
        )
        return model


def task_model(model, task):
    """The part of a static multi-task model that computes one task.

    In a static model (from `export`, `build_static` or `build_independent`)
    each task's output depends only on its own input, so a task can be
    evaluated alone, without feeding the other tasks. The allocation network
    (`build`) and the shared baseline (`build_shared`) run all tasks'
    batches through each layer together: call them on every task's input.

    Args:
        model: a static model with inputs and outputs in dicts keyed by task.
        task: a task name.

    Returns:
        A `keras.Model` from that task's input to its output.

    Raises:
        ValueError: for an unknown task, or a network that joins the tasks'
            batches.
    """
    if not isinstance(model.input, dict) or task not in model.input:
        raise ValueError(
            f"Expected a model with a dict input holding task {task!r}. "
            f"Received inputs {model.input!r}"
        )
    if any(isinstance(layer, JointComponents) for layer in model.layers):
        raise ValueError(
            f"Expected a static model (from `export`, `build_static` or "
            f"`build_independent`), whose tasks can run alone. Received {model.name!r}, "
            "which runs all tasks' batches through each layer together (as `build` and "
            "`build_shared` do): call it on every task's input instead"
        )
    return keras.Model(model.input[task], model.output[task], name=f"task_{sanitize_name(task)}")


def task_batches(datasets, batch_size, shuffle=True, seed=None, repeat=True):
    """Zips per-task datasets so that each step carries one batch per task.

    Args:
        datasets: dict keyed by task of unbatched `tf.data.Dataset`s of
            `(x, y)` pairs.
        batch_size: batch size of every task (paper: 16).
        shuffle: whether to shuffle each task's data.
        seed: shuffle seed.
        repeat: whether to repeat each dataset forever (training).

    Returns:
        A `tf.data.Dataset` of `({task: x}, {task: y})` batches.
    """
    import tensorflow as tf

    if not isinstance(datasets, dict) or not datasets:
        raise TypeError(
            f"Expected `datasets` to be a non-empty dict keyed by task. Received: {datasets!r}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"Expected `batch_size` >= 1. Received: batch_size={batch_size!r}")
    batched = {}
    for i, (name, dataset) in enumerate(datasets.items()):
        if shuffle:
            dataset = dataset.shuffle(
                10_000, seed=None if seed is None else seed + i, reshuffle_each_iteration=True
            )
        if repeat:
            dataset = dataset.repeat()
        batched[name] = dataset.batch(batch_size, drop_remainder=repeat)
    zipped = tf.data.Dataset.zip(batched)
    names = list(datasets)
    return zipped.map(
        lambda b: ({t: b[t][0] for t in names}, {t: b[t][1] for t in names})
    ).prefetch(tf.data.AUTOTUNE)
