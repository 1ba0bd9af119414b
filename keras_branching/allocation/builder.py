"""`AllocationBuilder`: turns an `Allocation` into a static Keras model."""

import keras
import numpy as np

from keras_branching import naming
from keras_branching.allocation.plan import Allocation
from keras_branching.builder import TaskInputs, seeded_layers
from keras_branching.layers.empty_allocation import EmptyAllocation
from keras_branching.models import TaskModel
from keras_branching.search import check_seed
from keras_branching.task import check_tasks, compile_for_tasks, fresh_optimizer


class AllocationBuilder:
    """Builds the static networks of learned parameter allocation.

    The network of Maziarz et al. (2019): a stack of layers, some of them
    *routed*. A routed layer is a list of component factories; every task
    may use any subset of its components, and its output is the mean of the
    components it uses. The other layers are shared by every task. An
    `Allocation` (one boolean task-by-component matrix per routed layer)
    says which task uses which component; `build(allocation)` gives the
    static model in which each task runs only its components, each used
    component existing once with one set of weights (or once per task, for
    an independent allocation). `LearnedAllocation` learns the allocation.

    Outputs are a dict keyed by task name. Inputs follow `inputs`: one
    shape gives one input that every task reads (each task sees the same
    examples, as in the other methods); a dict of shapes keyed by task gives
    one input per task, in a dict, so each task can have its own examples
    (see `keras_branching.datasets.task_batches`; use
    `dict.fromkeys(task_names, shape)` for one shape). Per-task inputs are
    keyed by `input_names[task]`: the task name with the characters Keras
    rejects in names replaced by `_` (the task name itself for names of
    letters, digits and `_.-`). `keras_branching.builder.TaskInputs` reads
    `inputs`, as for every builder. Per-task inputs may differ in shape
    here: a component shared by several tasks is called once per task
    (one set of weights).

    Seeds: with `seed` an int, `build(plan)` gives the same initial weights
    every time, in any process, without a global seed (see
    `BranchedModelBuilder`, which says what is and is not covered).

    Args:
        inputs: the input shape (a tuple without the batch axis) of the one
            input every task reads, or a dict of shapes keyed by task name
            for one input per task.
        layers: list of layers, in order. Each entry is either a zero-argument
            callable returning a fresh Keras layer (a layer shared by every
            task), or a list of such callables (a routed layer: its
            components, which must give outputs of one shape).
        tasks: list of `Task`; each task's head follows the last layer. Any
            task names (layer names are sanitised, as `BranchedModelBuilder`
            does).
        optimizer: an optimizer name or instance for `compile` (the paper
            trains with Adam at 1e-4). An instance is cloned for every model.
        seed: None or an int making `build` reproducible.

    Raises:
        TypeError: for a bad `inputs`, `layers` or `tasks`.
        ValueError: for an empty routed layer or input shapes of other tasks.

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
    >>> plan = Allocation(["a", "b"], [[[1, 0, 1], [0, 1, 1]]])
    >>> model = builder.build(plan)
    >>> sorted(model.output)
    ['a', 'b']
    >>> builder.count_params(plan) == model.count_params()
    True
    """

    def __init__(self, inputs, layers, tasks, optimizer="adam", seed=None):
        tasks = check_tasks(tasks)
        self.tasks = list(tasks)
        self.seed = check_seed(seed)
        self._inputs = TaskInputs(inputs, self.task_names)
        self.input_names = dict(self._inputs.input_names)
        self.input_shapes = dict(self._inputs.shapes)
        self.per_task_inputs = self._inputs.per_task
        self.layers = self._check_layers(layers)
        self.optimizer = optimizer
        self._sizes = None

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
        """Indices (0-based) of the routed layers in `layers`."""
        return [i for i, entry in enumerate(self.layers) if isinstance(entry, list)]

    @property
    def num_components(self):
        """Number of components of each routed layer, in order."""
        return [len(self.layers[i]) for i in self.routed_layers]

    def shared_allocation(self):
        """The fully shared baseline: every task uses every component, one set of weights."""
        return Allocation.shared(self.task_names, self.num_components)

    def independent_allocation(self):
        """The independent baseline: each task has its own copy of everything."""
        return Allocation.independent_of(self.task_names, self.num_components)

    def check_allocation(self, allocation):
        """Raises a clear error unless `allocation` fits this builder's tasks and layers.

        Raises:
            TypeError: if `allocation` is not an `Allocation`.
            ValueError: if its tasks or numbers of components differ.
        """
        if not isinstance(allocation, Allocation):
            raise TypeError(
                "Expected an `Allocation`. "
                f"Received: {allocation!r} (of type {type(allocation).__name__})"
            )
        if set(allocation.tasks) != set(self.task_names):
            raise ValueError(
                f"The allocation's tasks {list(allocation.tasks)} differ from the builder's "
                f"tasks {list(self.task_names)}."
            )
        if list(allocation.num_components) != self.num_components:
            raise ValueError(
                f"Expected one allocation matrix per routed layer, with "
                f"{self.num_components} components. Received an allocation with "
                f"{list(allocation.num_components)} components"
            )

    # Creating the pieces.

    def make_layer(self, index, component=None, task=None):
        """A fresh copy of layer `index` (0-based), or of one of its components.

        Args:
            index: index of the entry of `layers`.
            component: the component (0-based) of a routed layer, else None.
            task: the task owning this copy, for an independent model.

        Raises:
            TypeError: if the factory does not return a Keras layer.
        """
        factory = self.layers[index] if component is None else self.layers[index][component]
        name = naming.component_name(index, component, task)
        layer = factory()
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                "Expected a layer factory to return a Keras layer. "
                f"Received: {layer!r} (of type {type(layer).__name__}) for {name!r}"
            )
        layer.name = name
        return layer

    def make_head(self, task):
        """A fresh head for `task` (a `Task` or its name), named after it."""
        if isinstance(task, str):
            task = self.tasks[self.task_names.index(task)]
        return task.make_head()

    def make_inputs(self):
        """Fresh `keras.Input`s, in a dict keyed by task (one tensor for every task
        unless the inputs are per task)."""
        return self._inputs.make()

    def model_inputs(self, inputs):
        """The `inputs` of `keras.Model` from `make_inputs()`'s dict."""
        return self._inputs.model_inputs(inputs)

    # Building.

    def static_graph(self, allocation, get_layer, heads, name):
        """The functional static model of `allocation`.

        Args:
            allocation: a checked `Allocation`.
            get_layer: `get_layer(index, component, task)` gives the layer
                (component None for a shared layer); called once per task
                and layer the task runs.
            heads: dict of head layers keyed by task.
            name: the model's name.
        """
        inputs = self.make_inputs()
        features = dict(inputs)
        applied = {}  # one node per (layer, input): tasks that read one tensor share it

        def apply(layer, *tensors):
            key = (id(layer), *(id(x) for x in tensors))
            if key not in applied:
                applied[key] = layer(tensors[0] if len(tensors) == 1 else list(tensors))
            return applied[key]

        means = {}
        routed = 0
        for index, entry in enumerate(self.layers):
            if not isinstance(entry, list):
                features = {
                    t: apply(get_layer(index, None, t), features[t]) for t in self.task_names
                }
                continue
            matrix = allocation.layers[routed]
            routed += 1
            outputs = {}
            for t in self.task_names:
                row = matrix[allocation.tasks.index(t)]
                active = [
                    apply(get_layer(index, int(k), t), features[t]) for k in np.flatnonzero(row)
                ]
                if len(active) > 1:
                    shapes = {tuple(a.shape[1:]) for a in active}
                    if len(shapes) > 1:
                        raise ValueError(
                            f"Expected the components of routed layer {index} to give "
                            f"outputs of one shape. Received shapes {sorted(shapes)}"
                        )
                    key = tuple(id(a) for a in active)
                    if key not in means:
                        means[key] = keras.layers.Average(name=naming.component_mean_name(index, t))
                    outputs[t] = apply(means[key], *active)
                elif active:
                    outputs[t] = active[0]
                else:
                    factory = self.layers[index][0]
                    shape = factory().compute_output_spec(features[t]).shape[1:]
                    empty = EmptyAllocation(
                        tuple(shape), name=naming.empty_allocation_name(index, t)
                    )
                    outputs[t] = empty(features[t])
            features = outputs
        outputs = {t: heads[t](features[t]) for t in self.task_names}
        return TaskModel(self.model_inputs(inputs), outputs, name=name)

    def build(self, plan, compile=True, **compile_kwargs):
        """The static model of the allocation `plan`, with fresh weights.

        Each task runs only its components; components no task uses are not
        built. Tasks that use one component share its weights (unless the
        allocation is independent).

        Args:
            plan: an `Allocation` over this builder's tasks and layers.
            compile: whether to compile it with `compile` (default True).
            **compile_kwargs: extra arguments for `compile`.

        Returns:
            A `keras.Model` with outputs in a dict keyed by task; one input
            shared by every task, or one per task if the builder's `inputs`
            is a dict of shapes.

        Raises:
            TypeError, ValueError: if the allocation does not fit the builder.
        """
        allocation = plan
        self.check_allocation(allocation)
        cache = {}

        def get_layer(index, component, task):
            owner = task if allocation.independent else None
            key = (index, component, owner)
            if key not in cache:
                cache[key] = self.make_layer(index, component, owner)
            return cache[key]

        name = "independent_network" if allocation.independent else "static_network"
        with seeded_layers(self.seed, salt="allocation"):
            heads = {t: self.make_head(t) for t in self.task_names}
            model = self.static_graph(allocation, get_layer, heads, name)
        if compile:
            self.compile(model, **compile_kwargs)
        return model

    # Pricing allocations without building them.

    def _layer_sizes(self):
        """Parameters of one copy of each layer (a list per routed layer) and of each head."""
        if self._sizes is None:
            first = self.task_names[0]
            x = keras.Input(self.input_shapes[first])
            sizes = []
            for index, entry in enumerate(self.layers):
                if not isinstance(entry, list):
                    layer = self.make_layer(index)
                    x = layer(x)
                    sizes.append(layer.count_params())
                    continue
                components = [self.make_layer(index, k) for k in range(len(entry))]
                outputs = [c(x) for c in components]
                sizes.append([c.count_params() for c in components])
                x = outputs[0]
            heads = {}
            for t in self.task_names:
                head = self.make_head(t)
                head(x)
                heads[t] = head.count_params()
            self._sizes = (sizes, heads)
        return self._sizes

    def count_params(self, plan):
        """Exactly `build(plan).count_params()`, without building the model.

        The size of each layer, component and head is measured once (on one
        symbolic chain) and cached; pricing an allocation is then a sum.
        """
        allocation = plan
        self.check_allocation(allocation)
        sizes, heads = self._layer_sizes()
        total, routed = sum(heads.values()), 0
        copies = len(self.task_names) if allocation.independent else 1
        for size in sizes:
            if not isinstance(size, list):
                total += copies * size
                continue
            matrix = allocation.layers[routed]
            routed += 1
            used = matrix.sum(axis=0) if allocation.independent else matrix.any(axis=0)
            total += int(np.dot(used.astype(int), size))
        return int(total)

    # Training.

    def fresh_optimizer(self):
        """The builder's optimizer, as a fresh instance (or its name)."""
        return fresh_optimizer(self.optimizer)

    def compile(self, model, optimizer=None, **compile_kwargs):
        """Compiles `model` with each task's loss, loss weight and metrics.

        Metrics are `weighted_metrics`, so examples masked out with sample
        weight 0 (see `keras_branching.datasets.mask_missing`) do not count.

        Args:
            model: a model whose outputs are a dict keyed by task name.
            optimizer: optional optimizer; by default a fresh copy of the
                builder's.
            **compile_kwargs: extra arguments for `model.compile`.

        Returns:
            The model.
        """
        optimizer = self.fresh_optimizer() if optimizer is None else optimizer
        return compile_for_tasks(model, self.tasks, optimizer, **compile_kwargs)
