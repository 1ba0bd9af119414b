"""`BranchedModelBuilder`: turns a `BranchingTree` into a Keras model."""

import contextlib
import copy
import random
import warnings

import keras
import numpy as np

from keras_branching import naming
from keras_branching.layers.branch_point import BranchPoint
from keras_branching.layers.stacked import reseed_config, variable_numpy
from keras_branching.layers.task_batches import JoinTaskBatches, SplitTaskBatches
from keras_branching.models import TaskModel
from keras_branching.search import check_seed
from keras_branching.task import check_tasks, compile_for_tasks, fresh_optimizer
from keras_branching.tree import BranchingTree


@contextlib.contextmanager
def seeded_layers(seed, salt="builder"):
    """Makes the layers created inside the block reproducible from `seed`.

    Keras initialisers and `keras.random.SeedGenerator`s created without a
    seed draw one from Python's `random` module when they are created (see
    `keras.src.random.seed_generator.make_default_seed`). Inside this
    context Python's `random` is seeded from `seed` and `salt`; on leaving,
    its previous state is restored, so nothing global changes. With `seed`
    None the block runs as it is.

    Args:
        seed: an int, or None for no seeding.
        salt: a string mixed into the seed, so that two uses of one seed
            for different purposes draw different numbers.

    Example:

    >>> import keras, numpy as np
    >>> def weights():
    ...     with seeded_layers(7):
    ...         layer = keras.layers.Dense(2)
    ...     layer.build((None, 3))
    ...     return layer.get_weights()[0]
    >>> np.array_equal(weights(), weights())
    True
    """
    seed = check_seed(seed)
    if seed is None:
        yield
        return
    state = random.getstate()
    random.seed(f"keras_branching.{salt}:{seed}")
    try:
        yield
    finally:
        random.setstate(state)


def _is_shape(shape):
    return isinstance(shape, (tuple, list)) and all(
        d is None or (isinstance(d, int) and not isinstance(d, bool) and d > 0) for d in shape
    )


class TaskInputs:
    """The inputs of a builder's models: one input every task reads, or one per task.

    Every builder parses its `inputs` argument with this class, so they all
    accept the same forms and name their inputs alike: a shape tuple (or a
    `keras.Input`) gives one input, named `naming.SHARED_INPUT` (or the
    tensor's name), that every task reads; a dict of shapes keyed by task
    gives one input per task, keyed in the model's input dict by
    `input_names[task]` (`naming.input_name`: the task name with the
    characters Keras rejects in names replaced by `_`).

    Args:
        inputs: a `keras.Input`, a shape tuple (without the batch axis), or
            a dict of shape tuples keyed by task name.
        task_names: the builder's task names.
        one_shape: whether per-task inputs must all have one shape (needed
            where a block shared by several tasks runs on their joined
            batches).

    Attributes:
        per_task: whether there is one input per task.
        shapes: `{task: shape}` (one shape repeated for a shared input).
        input_names: `{task: key of its input}` in a per-task model.

    Raises:
        TypeError: for `inputs` of another form.
        ValueError: for a dict whose keys are not the task names, shapes
            that differ where `one_shape` asks for one, or task names that
            collide once sanitised.

    Example:

    >>> spec = TaskInputs({"a": (3,), "b c": (3,)}, ["a", "b c"])
    >>> spec.per_task, spec.input_names
    (True, {'a': 'a', 'b c': 'b_c'})
    >>> sorted(spec.model_inputs(spec.make()))
    ['a', 'b_c']
    """

    def __init__(self, inputs, task_names, one_shape=False):
        task_names = tuple(task_names)
        self.task_names = task_names
        self.input_names = {t: naming.input_name(t) for t in task_names}
        if len(set(self.input_names.values())) != len(task_names):
            raise ValueError(
                "Expected task names that stay distinct once the characters Keras rejects "
                f"in names are replaced by `_`. Received: {list(self.input_names)} -> "
                f"{list(self.input_names.values())}"
            )
        self.dtype, self.shared_name = "float32", naming.SHARED_INPUT
        if isinstance(inputs, keras.KerasTensor):
            self.per_task = False
            shape = tuple(inputs.shape[1:])
            self.dtype = inputs.dtype
            self.shared_name = getattr(inputs, "name", None) or naming.SHARED_INPUT
            self.shapes = dict.fromkeys(task_names, shape)
        elif _is_shape(inputs):
            self.per_task = False
            self.shapes = dict.fromkeys(task_names, tuple(inputs))
        elif isinstance(inputs, dict) and inputs and all(_is_shape(s) for s in inputs.values()):
            if set(inputs) != set(task_names):
                raise ValueError(
                    f"Expected one input shape per task {list(task_names)}. "
                    f"Received shapes for {sorted(inputs)}"
                )
            self.per_task = True
            self.shapes = {t: tuple(inputs[t]) for t in task_names}
            if one_shape and len(set(self.shapes.values())) > 1:
                raise ValueError(
                    "Expected one input shape for every task: a block shared by several "
                    "tasks runs once on their joined batches. Received shapes: "
                    f"{self.shapes}"
                )
        else:
            raise TypeError(
                "Expected `inputs` to be a `keras.Input`, a shape tuple of positive ints "
                "(without the batch axis) or a dict of such shapes keyed by task. "
                f"Received: inputs={inputs!r}"
            )

    def make(self):
        """Fresh `keras.Input`s in a dict keyed by task (one tensor for every task
        unless the inputs are per task)."""
        if not self.per_task:
            shape = self.shapes[self.task_names[0]]
            x = keras.Input(shape=shape, dtype=self.dtype, name=self.shared_name)
            return dict.fromkeys(self.task_names, x)
        return {
            t: keras.Input(shape=self.shapes[t], dtype=self.dtype, name=self.input_names[t])
            for t in self.task_names
        }

    def model_inputs(self, tensors):
        """The `inputs` of `keras.Model` from `make()`'s dict: one tensor, or a dict
        keyed by `input_names`."""
        if not self.per_task:
            return tensors[self.task_names[0]]
        return {self.input_names[t]: tensors[t] for t in self.task_names}


class _TaskRows:
    """Cuts and joins per-task batches in a model with one input per task.

    `rows(tensor, have, want)` gives the rows of the tasks `want` (a tuple)
    of a tensor holding the joined rows of the tasks `have`, in that order;
    each tensor is split at most once and each subset joined at most once.
    """

    def __init__(self, inputs, num_tasks, taken):
        self.inputs = inputs  # {task: input tensor}
        self.num_tasks = num_tasks
        self.taken = taken  # layer names in use
        self._pieces = {}
        self._joins = {}

    def join(self, tensors, group, source):
        """One tensor of the rows of `group` (a tuple), from `{task: tensor}`."""
        if len(group) == 1:
            return tensors[group[0]]
        key = (source, group)
        if key not in self._joins:
            name = naming.join_batches_name(source, group, self.num_tasks)
            layer = JoinTaskBatches(name=naming.unique_name(name, self.taken))
            self._joins[key] = layer([tensors[t] for t in group])
        return self._joins[key]

    def rows(self, tensor, have, want, source):
        """The rows of tasks `want` of `tensor` (the rows of `have`, the output of
        the layer named `source`)."""
        if tuple(want) == tuple(have):
            return tensor
        if id(tensor) not in self._pieces:
            name = naming.unique_name(naming.split_batches_name(source), self.taken)
            split = SplitTaskBatches(name=name)([tensor, *(self.inputs[t] for t in have)])
            self._pieces[id(tensor)] = (tensor, dict(zip(have, split)))
        pieces = self._pieces[id(tensor)][1]
        return self.join(pieces, tuple(want), source)


class BranchedModelBuilder:
    """Builds functional Keras models from branching trees.

    The builder holds what stays the same across every tree: the input, the
    backbone cut into blocks, and the tasks. `build(tree)` gives each group
    of each partition its own copy of the block, with freshly initialised
    weights, and each task its own head; the model has one output per task,
    in a dict keyed by task name, and is compiled with each task's loss,
    metrics and weight.

    Inputs follow `inputs`: one shape (or `keras.Input`) gives one input
    that every task reads; a dict of shapes keyed by task gives one input
    per task, in a dict keyed by `input_names[task]` (the task name, with
    the characters Keras rejects in names replaced by `_`), so each task can
    have its own examples (see `keras_branching.datasets.task_batches`). In
    such a model a block copy shared by several tasks runs once, on their
    batches joined along the batch axis (`JoinTaskBatches`), and its output
    is cut back into the tasks' rows where the tree branches
    (`SplitTaskBatches`); when every task gets the same batch, it computes
    what the one-input model computes. Layers that mix the rows of a batch
    (batch normalisation) see the joined batch.

    Seeds: with `seed` an int, `build(plan)` gives the same initial weights
    every time, in any process, without a global seed: the layers that the
    block factories, the heads and the builder create draw their
    initialisers' (and seed generators') seeds from Python's `random`,
    which `build` seeds from `seed` (restoring its state afterwards, see
    `seeded_layers`). Not covered: factories that draw seeds another way
    (numpy, their own generator), the order in which `fit` shuffles the
    data (the backend's global generator), and kernels that are
    nondeterministic on their own (multi-threaded CPU reductions, GPU); use
    `keras.utils.set_random_seed` and
    `tf.config.experimental.enable_op_determinism()` for those.

    Args:
        inputs: a `keras.Input`, a shape tuple (without the batch axis), or
            a dict of shape tuples keyed by task name (one input per task;
            every task's shape must be the same).
        blocks: list of zero-argument callables, each returning a fresh
            Keras layer (or model) every time it is called. A layer instance
            is also accepted: each copy is then cloned from its config (with
            its initialisers' seeds shifted per copy, so copies differ).
        tasks: list of `Task`.
        optimizer: an optimizer name or instance for `compile`. An instance
            is cloned from its config for every model built.
        gradient_scale: passed to every `BranchPoint` (`None` or `"mean"`),
            and to every `SplitTaskBatches` where the tree branches in a
            model with per-task inputs.
        seed: None or an int making `build` reproducible (see above).

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

    With one input per task:

    >>> builder = BranchedModelBuilder(
    ...     inputs={"a": (8,), "b": (8,)},
    ...     blocks=[lambda: keras.layers.Dense(16, activation="relu")] * 2,
    ...     tasks=[Task(t, head=lambda: keras.layers.Dense(1), loss="mse") for t in "ab"],
    ...     seed=1,
    ... )
    >>> model = builder.build(tree)
    >>> sorted(model.input)
    ['a', 'b']
    >>> read_tree(model) == tree
    True
    """

    def __init__(self, inputs, blocks, tasks, optimizer="adam", gradient_scale=None, seed=None):
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
        self.seed = check_seed(seed)
        self.blocks = list(blocks)
        self.tasks = list(tasks)
        self._inputs = TaskInputs(inputs, self.task_names, one_shape=True)
        self.optimizer = optimizer
        self.gradient_scale = gradient_scale
        self._sizes = None

    @property
    def per_task_inputs(self):
        """Whether the models take one input per task (a dict keyed by `input_names`)."""
        return self._inputs.per_task

    @property
    def input_names(self):
        """`{task: key of its input}` in a model with per-task inputs."""
        return dict(self._inputs.input_names)

    @property
    def input_shapes(self):
        """`{task: input shape}` (one shape repeated for a shared input)."""
        return dict(self._inputs.shapes)

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
        """A fresh `keras.Input` matching the builder's input (for per-task inputs:
        one input of the tasks' common shape, as every block copy sees it)."""
        return self._one_input().make()[self.task_names[0]]

    def _one_input(self):
        if not self.per_task_inputs:
            return self._inputs
        return TaskInputs(self._inputs.shapes[self.task_names[0]], self.task_names)

    def make_inputs(self):
        """Fresh `keras.Input`s in a dict keyed by task: one tensor for every task,
        or one per task if the builder's `inputs` is a dict of shapes."""
        return self._inputs.make()

    def model_inputs(self, inputs):
        """The `inputs` of `keras.Model` from `make_inputs()`'s dict."""
        return self._inputs.model_inputs(inputs)

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
            config = reseed_config(copy.deepcopy(config), copy_index)
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

    def build(self, plan, compile=True, fuse="auto", **compile_kwargs):
        """Builds (and compiles) the functional model of the tree `plan`.

        Args:
            plan: a `BranchingTree` over the builder's tasks and blocks.
            compile: whether to compile the model (default True).
            fuse: `"auto"` (default) to let `keras_branching.fusion.should_fuse`
                choose (see docs/performance.md); True for a fused model,
                each block depth one `StackedBlock` computing all its groups
                at once (same parameters, same outputs; see
                `keras_branching.fusion`; a block that cannot be stacked
                falls back to separate copies with a `UserWarning`); False
                for one layer per block copy.
            **compile_kwargs: extra arguments for `compile`, for example
                `jit_compile=True` or `steps_per_execution=8`.

        Returns:
            A `keras.Model` whose output is a dict keyed by task name.

        Raises:
            ValueError: for `fuse` not True, False or "auto", or `fuse=True`
                with one input per task.
        """
        tree = plan
        self.check_tree(tree)
        if fuse not in (True, False, "auto") or not isinstance(fuse, (bool, str)):
            raise ValueError(
                f'Expected `fuse` to be True, False or "auto". Received: fuse={fuse!r}'
            )
        if fuse:
            from keras_branching import fusion

            if fuse != "auto" or fusion.should_fuse(self, tree):
                return fusion.build_fused(self, tree, compile=compile, **compile_kwargs)
        with seeded_layers(self.seed):
            inputs = self.make_inputs()
            trunk_inputs = inputs if self.per_task_inputs else inputs[self.task_names[0]]
            features, copies = self._apply_tree(tree, trunk_inputs)
            outputs = {name: self.make_head(name)(features[name]) for name in self.task_names}
        model = TaskModel(self.model_inputs(inputs), outputs, name="branched_model")
        self._warn_identical_copies(copies)
        if compile:
            self.compile(model, **compile_kwargs)
        return model

    def apply_tree(self, tree, inputs):
        """Applies fresh block copies laid out as `tree` to `inputs`.

        Args:
            tree: a `BranchingTree` over the builder's tasks and blocks.
            inputs: one tensor every task reads, or a dict of tensors keyed
                by task (each task's own batch; a block copy shared by
                several tasks runs once on their joined batches).

        Returns:
            A dict mapping each task name to its last block's output (its
            head's input). Useful to embed a branched trunk inside a larger
            functional model.
        """
        return self._apply_tree(tree, inputs)[0]

    def _apply_tree(self, tree, inputs):
        """`apply_tree`, also returning the block copies: `{block: [layers]}`."""
        self.check_tree(tree)
        if isinstance(inputs, dict):
            return self._apply_tree_per_task(tree, inputs)
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

    def _apply_tree_per_task(self, tree, inputs):
        """`_apply_tree` for a dict of tensors keyed by task: each group's copy runs
        once on the joined batches of its tasks."""
        if set(inputs) != set(tree.tasks):
            raise ValueError(
                f"Expected one input tensor per task {list(tree.tasks)}. "
                f"Received tensors for {sorted(inputs)}"
            )
        # Order the tasks so that every group of every block is a contiguous
        # run: a joined batch then splits into its children's runs.
        rank = {
            t: tuple(
                next(i for i, g in enumerate(tree.groups(d)) if t in g)
                for d in range(tree.num_blocks)
            )
            for t in tree.tasks
        }

        def ordered(group):
            return tuple(sorted(group, key=rank.__getitem__))

        taken = set()
        rows = _TaskRows(inputs, len(self.tasks), taken)
        current, copies, cuts = {}, {}, {}  # current: {ordered group: (tensor, layer name)}
        for block in range(tree.num_blocks):
            groups = tree.groups(block)
            previous, current, copies[block] = current, {}, []
            for index, tree_group in enumerate(groups):
                group = ordered(tree_group)
                if block == 0:
                    x = rows.join(inputs, group, naming.SHARED_INPUT)
                else:
                    x = self._child_rows(tree, block, group, previous, cuts, inputs, ordered, taken)
                name = naming.block_name(block, tree_group, len(self.tasks))
                name = naming.unique_name(name, taken)
                layer = self.make_block(block, copy_index=index, name=name)
                current[group] = (layer(x), name)
                copies[block].append(layer)
        singles = {}
        for group, (tensor, name) in current.items():
            pieces = [tensor] if len(group) == 1 else self._cut(tensor, name, group, inputs, taken)
            singles.update(zip(group, pieces))
        return singles, copies

    def _child_rows(self, tree, block, group, previous, cuts, inputs, ordered, taken):
        """The rows of `group` (at `block`) of its parent's output, cut where it branches."""
        parent = next(g for g in previous if group[0] in g)
        tensor, name = previous[parent]
        children = [ordered(g) for g in tree.groups(block) if g[0] in parent]
        if len(children) == 1:
            return tensor
        children.sort(key=lambda g: parent.index(g[0]))
        if name not in cuts:
            cuts[name] = dict(
                zip(children, self._cut(tensor, name, parent, inputs, taken, children))
            )
        return cuts[name][group]

    def _cut(self, tensor, name, group, inputs, taken, children=None):
        """Splits `tensor` (the joined rows of `group`) into its children's rows."""
        sizes = None if children is None else [len(c) for c in children]
        split = SplitTaskBatches(
            group_sizes=sizes,
            gradient_scale=self.gradient_scale,
            name=naming.unique_name(naming.split_batches_name(name), taken),
        )
        return split([tensor, *(inputs[t] for t in group)])

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
            values = [[variable_numpy(w) for w in layer.weights] for layer in layers]
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
    from `.keras` as well); for a fused model (`build(tree, fuse=True)`),
    the groups recorded by its `StackGroups` and `GatherGroups`. Otherwise,
    from each task's output it walks back through
    the head, the block copies and the `BranchPoint` layers to the input
    (in a model with per-task inputs, through the `SplitTaskBatches` and
    `JoinTaskBatches` layers back to the task's own input); tasks that pass
    through the same copy of block `d` form a group of partition `d`.

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
    from keras_branching import fusion

    if fusion.is_fused(model):
        return fusion.fused_tree(model)
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
