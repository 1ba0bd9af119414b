"""`BranchedModelBuilder`: turns a `BranchingTree` into a Keras model."""

import copy
import warnings

import keras
import numpy as np

from keras_branching import naming
from keras_branching._validation import check_tasks
from keras_branching.layers.branch_point import BranchPoint
from keras_branching.models import TaskModel
from keras_branching.task import compile_for_tasks, fresh_optimizer
from keras_branching.tree import BranchingTree


def _reseed(config, offset):
    """Returns a copy of a layer config with every integer seed shifted by `offset`.

    Cloning a layer from its config copies its initialisers' seeds, so
    every copy of a block would start from the same weights; shifting the
    seeds keeps each copy reproducible but different.
    """
    if isinstance(config, dict):
        return {
            k: (v + offset if k == "seed" and isinstance(v, int) else _reseed(v, offset))
            for k, v in config.items()
        }
    if isinstance(config, list):
        return [_reseed(v, offset) for v in config]
    return config


class BranchedModelBuilder:
    """Builds functional Keras models from branching trees.

    The builder holds what stays the same across every tree: the input, the
    backbone cut into blocks, and the tasks. `build(tree)` gives each group
    of each partition its own copy of the block, with freshly initialised
    weights, and each task its own head; the model has one output per task,
    in a dict keyed by task name, and is compiled with each task's loss,
    metrics and weight.

    Args:
        inputs: a `keras.Input` or a shape tuple (without the batch axis).
        blocks: list of zero-argument callables, each returning a fresh
            Keras layer (or model) every time it is called. A layer instance
            is also accepted: each copy is then cloned from its config (with
            its initialisers' seeds shifted per copy, so copies differ).
        tasks: list of `Task`.
        optimizer: an optimizer name or instance for `compile`. An instance
            is cloned from its config for every model built.
        gradient_scale: passed to every `BranchPoint` (`None` or `"mean"`).

    Example:

    >>> import keras
    >>> from keras_branching import BranchingTree, Task
    >>> builder = BranchedModelBuilder(
    ...     inputs=(8,),
    ...     blocks=[lambda: keras.layers.Dense(16, activation="relu")] * 2,
    ...     tasks=[
    ...         Task("a", head=lambda: keras.layers.Dense(1), loss="mse"),
    ...         Task("b", head=lambda: keras.layers.Dense(1), loss="mse"),
    ...     ],
    ... )
    >>> tree = BranchingTree(["a", "b"], [[["a", "b"]], [["a"], ["b"]]])
    >>> model = builder.build(tree)
    >>> sorted(model.output.keys())
    ['a', 'b']
    >>> builder.count_params(tree) == model.count_params()
    True
    """

    def __init__(self, inputs, blocks, tasks, optimizer="adam", gradient_scale=None):
        self._input_spec = self._check_inputs(inputs)
        if isinstance(blocks, (str, bytes)) or not isinstance(blocks, (list, tuple)):
            raise TypeError(
                "Expected `blocks` to be a list of zero-argument callables "
                f"returning Keras layers. Received: blocks={blocks!r}"
            )
        if not blocks:
            raise ValueError(f"Expected at least one block. Received: blocks={blocks!r}")
        for i, block in enumerate(blocks):
            if not callable(block) and not isinstance(block, keras.layers.Layer):
                raise TypeError(
                    "Expected each block to be a zero-argument callable returning "
                    f"a Keras layer, or a Keras layer. Received: blocks[{i}]={block!r} "
                    f"(of type {type(block).__name__})"
                )
        tasks = check_tasks(tasks)
        BranchPoint(1, gradient_scale=gradient_scale)  # validates gradient_scale
        self.blocks = list(blocks)
        self.tasks = list(tasks)
        self.optimizer = optimizer
        self.gradient_scale = gradient_scale
        self._sizes = None

    @staticmethod
    def _check_inputs(inputs):
        if isinstance(inputs, keras.KerasTensor):
            return {
                "shape": tuple(inputs.shape[1:]),
                "dtype": inputs.dtype,
                "name": getattr(inputs, "name", None) or "inputs",
            }
        if isinstance(inputs, (tuple, list)) and all(
            d is None or (isinstance(d, int) and not isinstance(d, bool) and d > 0) for d in inputs
        ):
            return {"shape": tuple(inputs), "dtype": "float32", "name": "inputs"}
        raise TypeError(
            "Expected `inputs` to be a `keras.Input` or a shape tuple of "
            f"positive ints (without the batch axis). Received: inputs={inputs!r}"
        )

    @property
    def task_names(self):
        """The task names, in the builder's order."""
        return tuple(t.name for t in self.tasks)

    @property
    def num_blocks(self):
        """The number of blocks of the backbone."""
        return len(self.blocks)

    def shared_tree(self):
        """The fully shared tree over this builder's tasks and blocks."""
        return BranchingTree.shared(self.task_names, self.num_blocks)

    def independent_tree(self):
        """The fully independent tree over this builder's tasks and blocks."""
        return BranchingTree.independent(self.task_names, self.num_blocks)

    def make_input(self):
        """A fresh `keras.Input` matching the builder's input."""
        spec = self._input_spec
        return keras.Input(shape=spec["shape"], dtype=spec["dtype"], name=spec["name"])

    # Creating the pieces.

    def make_block(self, block, copy_index=0, name=None):
        """A fresh copy of block `block` (0-based), optionally renamed.

        Args:
            block: index of the block.
            copy_index: which copy this is; layer instances given as blocks
                are cloned with their seeds shifted by it.
            name: name for the new layer.

        Raises:
            TypeError: if the block's factory does not return a Keras layer.
        """
        source = self.blocks[block]
        if isinstance(source, keras.layers.Layer):
            try:
                config = source.get_config()
            except NotImplementedError as error:
                raise TypeError(
                    f"Block {block} is a layer instance ({source.name!r}) that cannot "
                    "be cloned from its config. Pass a zero-argument callable that "
                    "returns a fresh layer instead."
                ) from error
            config = _reseed(copy.deepcopy(config), copy_index)
            layer = source.__class__.from_config(config)
        else:
            layer = source()
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                f"Expected block {block}'s factory to return a Keras layer or "
                f"model. Received: {layer!r} (of type {type(layer).__name__})"
            )
        if name is not None:
            layer.name = name
        return layer

    def make_head(self, task):
        """A fresh head for `task` (a `Task` or its name), named after it."""
        if isinstance(task, str):
            task = self.tasks[self.task_names.index(task)]
        return task.make_head()

    def check_tree(self, tree):
        """Raises a clear error unless `tree` fits this builder's tasks and blocks."""
        if not isinstance(tree, BranchingTree):
            raise TypeError(
                f"Expected a `BranchingTree`. Received: {tree!r} (of type {type(tree).__name__})"
            )
        if set(tree.tasks) != set(self.task_names):
            raise ValueError(
                f"The tree's tasks {list(tree.tasks)} differ from the builder's "
                f"tasks {list(self.task_names)}."
            )
        if tree.num_blocks != self.num_blocks:
            raise ValueError(
                f"The tree has {tree.num_blocks} blocks but the builder has "
                f"{self.num_blocks}. Expected a tree with {self.num_blocks} blocks."
            )

    # Building.

    def build(self, plan, compile=True, **compile_kwargs):
        """Builds (and compiles) the functional model of the tree `plan`.

        Args:
            plan: a `BranchingTree` over the builder's tasks and blocks.
            compile: whether to compile the model (default True).
            **compile_kwargs: extra arguments for `compile`, for example
                `jit_compile=True` or `steps_per_execution=8`.

        Returns:
            A `keras.Model` whose output is a dict keyed by task name.
        """
        tree = plan
        self.check_tree(tree)
        inputs = self.make_input()
        features, copies = self._apply_tree(tree, inputs)
        outputs = {name: self.make_head(name)(features[name]) for name in self.task_names}
        model = TaskModel(inputs, outputs, name="branched_model")
        self._warn_identical_copies(copies)
        if compile:
            self.compile(model, **compile_kwargs)
        return model

    def apply_tree(self, tree, inputs):
        """Applies fresh block copies laid out as `tree` to the tensor `inputs`.

        Returns a dict mapping each task name to its last block's output
        (its head's input). Useful to embed a branched trunk inside a larger
        functional model.
        """
        return self._apply_tree(tree, inputs)[0]

    def _apply_tree(self, tree, inputs):
        """`apply_tree`, also returning the block copies: `{block: [layers]}`."""
        self.check_tree(tree)
        # `current[i]` is the output of group i of the previous block, made
        # by the layer named `current_names[i]`.
        current, current_names = [inputs], ["inputs"]
        previous_groups = [tuple(tree.tasks)]
        copies = {}
        for block in range(tree.num_blocks):
            groups = tree.groups(block)
            branch_inputs = self._split(previous_groups, groups, current, current_names)
            current, current_names, copies[block] = [], [], []
            for index, (group, x) in enumerate(zip(groups, branch_inputs)):
                name = naming.block_name(block, group, len(self.tasks))
                if name in current_names:  # two groups whose names sanitise alike
                    name = f"{name}_{index}"
                layer = self.make_block(block, copy_index=index, name=name)
                current.append(layer(x))
                current_names.append(name)
                copies[block].append(layer)
            previous_groups = groups
        # After the last block each task gets its own head.
        singletons = [(t,) for g in previous_groups for t in g]
        finals = self._split(previous_groups, singletons, current, current_names)
        return {group[0]: x for group, x in zip(singletons, finals)}, copies

    def _split(self, parents, children, tensors, names):
        """Routes parent outputs to children, inserting a BranchPoint per split."""
        routed = [None] * len(children)
        for parent, tensor, name in zip(parents, tensors, names):
            mine = [c for c, child in enumerate(children) if child[0] in parent]
            if len(mine) == 1:
                routed[mine[0]] = tensor
                continue
            branches = BranchPoint(
                len(mine), gradient_scale=self.gradient_scale, name=naming.split_name(name)
            )(tensor)
            for c, branch in zip(mine, branches):
                routed[c] = branch
        return routed

    def fresh_optimizer(self):
        """The builder's optimizer, as a fresh instance (or its name)."""
        return fresh_optimizer(self.optimizer)

    def compile(self, model, optimizer=None, **compile_kwargs):
        """Compiles `model` with each task's loss, loss weight and metrics.

        Args:
            model: a model whose outputs are a dict keyed by task name.
            optimizer: optional optimizer; by default a fresh copy of the
                builder's.
            **compile_kwargs: extra arguments for `model.compile`.
        """
        optimizer = self.fresh_optimizer() if optimizer is None else optimizer
        return compile_for_tasks(model, self.tasks, optimizer, **compile_kwargs)

    @staticmethod
    def _warn_identical_copies(copies):
        for block, layers in copies.items():
            values = [[np.asarray(w) for w in layer.weights] for layer in layers]
            if len(values) < 2 or not any(v.size > 1 for v in values[0]):
                continue
            if any(
                all(np.array_equal(a, b) for a, b in zip(values[0], other)) for other in values[1:]
            ):
                warnings.warn(
                    f"Copies of block {block} start with identical weights; the "
                    "block factory probably uses seeded initialisers. Give each "
                    "copy its own seed, or identical branches stay identical.",
                    stacklevel=3,
                )

    # Pricing trees without building them.

    def _block_and_head_sizes(self):
        """Parameter counts of one copy of each block, and of each head."""
        if self._sizes is None:
            x = self.make_input()
            block_sizes = []
            for block in range(self.num_blocks):
                layer = self.make_block(block)
                x = layer(x)
                block_sizes.append(layer.count_params())
            head_sizes = {}
            for task in self.tasks:
                head = self.make_head(task)
                head(x)
                head_sizes[task.name] = head.count_params()
            self._sizes = (block_sizes, head_sizes)
        return self._sizes

    def count_params(self, plan):
        """Exactly `build(plan).count_params()`, without building the model.

        The sizes of one copy of each block and each head are measured once
        (by building one chain symbolically) and cached, so pricing a tree
        afterwards is a sum: fast enough for searches over thousands of
        trees.
        """
        tree = plan
        self.check_tree(tree)
        block_sizes, head_sizes = self._block_and_head_sizes()
        return int(
            sum(n * size for n, size in zip(tree.num_copies(), block_sizes))
            + sum(head_sizes.values())
        )


def read_tree(model):
    """The `BranchingTree` of a model built by `BranchedModelBuilder.build`.

    Reads the model's functional graph (`naming.task_block_chains`) (so it works on a model reloaded
    from `.keras` as well): from each task's output it walks back through
    the head, the block copies and the `BranchPoint` layers to the input;
    tasks that pass through the same copy of block `d` form a group of
    partition `d`.

    Args:
        model: a functional model whose outputs are a dict keyed by task,
            each output a head on a chain of single-input block copies.

    Returns:
        The `BranchingTree`, with tasks in the order of the model's outputs.

    Raises:
        ValueError: if the model is not laid out like a built branched model.

    Example:

    >>> import keras
    >>> from keras_branching import Task
    >>> builder = BranchedModelBuilder(
    ...     (4,),
    ...     [lambda: keras.layers.Dense(3)] * 2,
    ...     [Task(t, head=lambda: keras.layers.Dense(1), loss="mse") for t in "ab"],
    ... )
    >>> tree = BranchingTree(["a", "b"], [[["a", "b"]], [["a"], ["b"]]])
    >>> read_tree(builder.build(tree)) == tree
    True
    """
    chains = naming.task_block_chains(model)
    depths = {task: len(chain) for task, chain in chains.items()}
    if len(set(depths.values())) != 1 or not next(iter(depths.values())):
        raise ValueError(
            "Expected every task to pass through the same number of blocks (at least "
            f"one). Received block counts per task: {depths}"
        )
    tasks = list(chains)
    partitions = []
    for block in range(depths[tasks[0]]):
        groups = {}
        for task in tasks:
            groups.setdefault(chains[task][block], []).append(task)
        partitions.append(list(groups.values()))
    return BranchingTree(tasks, partitions)
