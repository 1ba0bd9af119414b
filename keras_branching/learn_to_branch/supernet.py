"""The learning-to-branch supernet and the tree it has learned.

Method 2 of `docs/methods.md` (Guo, Lee, Ulbricht, ICML 2020). The
supernet has one layer of nodes per block of the builder's backbone:
layer `l` holds `widths[l]` copies of block `l`. A `GumbelRouter` between
consecutive layers lets every node of layer `l` pick one node of layer
`l - 1` as its parent; the nodes of the first layer all read the input, and
task `t`'s head reads node `t` of the last layer. Training the supernet
with `fit` (and a `TemperatureSchedule`) learns the routers' logits along
with the weights; `derive_tree` then reads each child's most likely parent
and returns the `BranchingTree` that the builder builds as a plain model.

Layer names come from `keras_branching.naming` (`supernet_node_name`,
`router_name`, `head_name`); they make summaries readable and nothing
reads them back. `derive_tree` and `supernet_parents` read the structure
from the functional graph (which router output feeds which node, which
nodes feed each router, which node each head reads), so they also work on
a supernet reloaded from a `.keras` file.
"""

import warnings

import keras
import numpy as np

from keras_branching import fusion, naming
from keras_branching.builder import _TaskRows, seeded_layers
from keras_branching.layers.group_gather import StackGroups
from keras_branching.layers.gumbel_router import GumbelRouter
from keras_branching.optimizers import ArchitectureOptimizer
from keras_branching.search import check_seed
from keras_branching.tree import BranchingTree


def check_widths(builder, widths, route_heads=False):
    """Validates supernet widths against a builder.

    Args:
        builder: a `BranchedModelBuilder`.
        widths: one int >= 1 per block; the last equal to the number of tasks
            unless `route_heads`.
        route_heads: True when the task heads are routed as one more layer
            (`LearnToBranch(route_heads=True)`), so the last width is free.

    Returns:
        The widths as a list of ints.

    Raises:
        TypeError: if `widths` is not a list of ints.
        ValueError: for the wrong number of widths, a width below 1, or a
            last width other than the number of tasks (without
            `route_heads`).

    Example:

    >>> import keras
    >>> from keras_branching.builder import BranchedModelBuilder
    >>> from keras_branching.task import Task
    >>> builder = BranchedModelBuilder(
    ...     (8,), [lambda: keras.layers.Dense(4)] * 2,
    ...     [Task(n, lambda: keras.layers.Dense(1), "mse") for n in "ab"])
    >>> check_widths(builder, (1, 2))
    [1, 2]
    """
    if isinstance(widths, (str, bytes)) or not isinstance(widths, (list, tuple)):
        raise TypeError(
            f"Expected `widths` to be a list of ints, one per block. Received: widths={widths!r}"
        )
    for w in widths:
        if isinstance(w, (bool, np.bool_)) or not isinstance(w, (int, np.integer)):
            raise TypeError(f"Expected every width to be an int. Received: widths={list(widths)}")
    widths = [int(w) for w in widths]
    if len(widths) != builder.num_blocks:
        raise ValueError(
            f"Expected one width per block ({builder.num_blocks} widths). "
            f"Received: widths={widths} ({len(widths)} widths)"
        )
    if any(w < 1 for w in widths):
        raise ValueError(f"Expected every width >= 1. Received: widths={widths}")
    if not route_heads and widths[-1] != len(builder.tasks):
        raise ValueError(
            f"Expected the last width to equal the number of tasks ({len(builder.tasks)}: "
            f"one node per task's head). Received: widths={widths}"
        )
    return widths


def build_supernet(
    builder,
    widths,
    temperature=1.0,
    router_learning_rate=None,
    seed=None,
    compile=True,
    usage_penalty=0.0,
    hard=True,
    activity_penalty=0.0,
    router_optimizer=None,
    fuse=False,
    **compile_kwargs,
):
    """Builds (and compiles) the learning-to-branch supernet of a builder.

    Layer `l` has `widths[l]` fresh copies of block `l`; `GumbelRouter`s
    link consecutive layers; task `t` (in the builder's order) reads node
    `t` of the last layer through its head.

    With a builder whose inputs are per task (a dict of shapes), the
    supernet takes a dict of inputs keyed by `builder.input_names`: the
    tasks' batches are joined once (`JoinTaskBatches`) and every node up
    to the last layer runs on the joined batch (any task may come to use
    any node); the last layer's node `t` runs on task `t`'s rows only,
    cut from its router output by `SplitTaskBatches`.

    With `builder.seed` an int, the blocks' and heads' initial weights (and
    the routers' noise, unless `seed` is given) are the same in every
    process (see `BranchedModelBuilder`).

    Args:
        builder: a `BranchedModelBuilder`.
        widths: number of nodes per block; the last must equal the number
            of tasks. Widths growing with depth are usual (e.g. `[1, 2, 4]`
            for 4 tasks, or `[2, 4, 8, 16, 40]` for CelebA's 40).
        temperature: the routers' initial temperature, > 0 (anneal it with
            `keras_branching.callbacks.TemperatureSchedule`).
        router_learning_rate: learning rate of the router logits. `None`
            uses the builder's optimizer for everything; a number compiles
            with `ArchitectureOptimizer.with_learning_rate(builder.optimizer,
            router_learning_rate)`.
        seed: optional int; the router of layer `l` samples with seed
            `seed + l`.
        compile: whether to compile the model.
        usage_penalty: every router's `usage_penalty` (see `GumbelRouter`),
            >= 0; 0 (default) is the paper's supernet.
        router_optimizer: optional optimizer (instance, copied, or name)
            of the router logits, replacing `router_learning_rate`; the
            weights keep the builder's optimizer.
        activity_penalty: every router's `activity_penalty` (an L1
            activity penalty on the nodes it reads), >= 0; 0 (default) is
            the paper's supernet.
        hard: every router's `hard`: hard samples with straight-through
            gradients (default, the paper's) or soft mixing in training.
        fuse: False (default): every node is its own layer. True: a fused
            supernet, each layer's nodes one `StackedBlock` on tensors laid
            out `(batch, width, ...)`, and each router a
            `GumbelRouter(stacked=True)` mixing the stacked parents in one
            contraction, and the task heads of one config one more
            `StackedBlock` (each task's output a `SelectGroup` named as its
            head); it computes what the separate supernet computes
            and starts from the same weights (with `builder.seed` set).
            Falls back to the separate supernet, with a `UserWarning`, when a
            layer's nodes cannot be stacked (`fusion.copies_reason`).
            `"auto"` fuses by `keras_branching.fusion.fuse_rule`.
            `derive_tree`, `supernet_parents` and `router_probabilities`
            read both forms.
        **compile_kwargs: extra arguments for `compile` (`jit_compile`...).

    Returns:
        The supernet, a `keras.Model` named `"supernet"` whose output is a
        dict keyed by task name.

    Raises:
        TypeError, ValueError: for widths of the wrong type or length, a
            width below 1, a last width other than the number of tasks, a
            bad temperature, seed or router learning rate, a `fuse` other
            than True, False or "auto", or `fuse=True` with one input per
            task.

    Example:

    >>> import keras
    >>> from keras_branching.builder import BranchedModelBuilder
    >>> from keras_branching.task import Task
    >>> builder = BranchedModelBuilder(
    ...     (8,), [lambda: keras.layers.Dense(4)] * 2,
    ...     [Task(n, lambda: keras.layers.Dense(1), "mse") for n in "abc"])
    >>> supernet = build_supernet(builder, [2, 3], router_learning_rate=0.03)
    >>> supernet_parents(supernet)  # every child starts on its first parent
    {1: [0, 0, 0]}
    >>> type(supernet.optimizer).__name__
    'ArchitectureOptimizer'
    """
    widths = check_widths(builder, widths)
    seed = check_seed(seed)
    if not isinstance(fuse, (bool, str)) or fuse not in (True, False, "auto"):
        raise ValueError(f'Expected `fuse` to be True, False or "auto". Received: fuse={fuse!r}')
    if fuse is True and builder.per_task_inputs:
        raise ValueError(
            "Expected a builder with one shared input for `fuse=True`: with one input per "
            f"task the nodes see different batches. Received per-task inputs for "
            f"{list(builder.task_names)}"
        )
    if fuse == "auto":
        fuse = fusion.fuse_rule(builder, widths)
    optimizer = None  # the builder's
    if compile and router_optimizer is not None:
        router_optimizer = keras.optimizers.get(router_optimizer)
        router_optimizer = router_optimizer.__class__.from_config(router_optimizer.get_config())
        optimizer = ArchitectureOptimizer(builder.fresh_optimizer(), router_optimizer)
    elif compile and router_learning_rate is not None:
        optimizer = ArchitectureOptimizer.with_learning_rate(
            builder.fresh_optimizer(), router_learning_rate
        )
    router_kwargs = {
        "temperature": temperature,
        "usage_penalty": usage_penalty,
        "activity_penalty": activity_penalty,
        "hard": hard,
    }
    graph = None
    if fuse:
        graph = _fused_supernet_graph(builder, widths, seed, router_kwargs)
    if graph is None:
        with seeded_layers(builder.seed, salt="supernet"):
            graph = _supernet_graph(
                builder,
                widths,
                temperature,
                seed,
                usage_penalty=usage_penalty,
                hard=hard,
                activity_penalty=activity_penalty,
            )
    inputs, outputs = graph
    model = keras.Model(builder.model_inputs(inputs), outputs, name="supernet")
    if compile:
        builder.compile(model, optimizer=optimizer, **compile_kwargs)
    return model


def _supernet_graph(
    builder, widths, temperature, seed, usage_penalty=0.0, hard=True, activity_penalty=0.0
):
    """The supernet's inputs (a dict keyed by task) and outputs."""
    tasks = builder.task_names
    inputs = builder.make_inputs()
    per_task = builder.per_task_inputs
    rows = _TaskRows(inputs, len(tasks), set())
    last = len(widths) - 1
    nodes = []
    for block, width in enumerate(widths):
        if block == 0 and per_task and block == last:
            parents = [inputs[t] for t in tasks]  # one node per task, on its own batch
        elif block == 0 and per_task:
            parents = [rows.join(inputs, tasks, naming.SHARED_INPUT)] * width
        elif block == 0:
            parents = [inputs[tasks[0]]] * width
        else:
            router = GumbelRouter(
                width,
                temperature=temperature,
                seed=None if seed is None else seed + block,
                usage_penalty=usage_penalty,
                activity_penalty=activity_penalty,
                hard=hard,
                name=naming.router_name(block),
            )
            parents = router(nodes)
            if per_task and block == last:
                parents = [
                    rows.rows(x, tasks, (t,), naming.router_output_name(block, c))
                    for c, (x, t) in enumerate(zip(parents, tasks))
                ]
        nodes = [
            builder.make_block(block, copy_index=c, name=naming.supernet_node_name(block, c))(
                parent
            )
            for c, parent in enumerate(parents)
        ]
    outputs = {}
    for t, task in enumerate(builder.tasks):
        head = builder.make_head(task)
        head.name = naming.head_name(task.name)
        outputs[task.name] = head(nodes[t])
    return inputs, outputs


def _fused_supernet_graph(builder, widths, seed, router_kwargs):
    """The fused supernet's inputs and outputs, or None (with a warning) if a layer cannot stack.

    The routers, node copies and heads are made in the order
    `_supernet_graph` makes them, under the same seed, so both forms start
    from the same weights; each layer's copies then become one
    `StackedBlock`.
    """
    tasks = builder.task_names
    with seeded_layers(builder.seed, salt="supernet"):
        inputs = builder.make_inputs()
        routers, copies = [None], []
        for block, width in enumerate(widths):
            if block > 0:
                routers.append(
                    GumbelRouter(
                        width,
                        seed=None if seed is None else seed + block,
                        stacked=True,
                        name=naming.router_name(block),
                        **router_kwargs,
                    )
                )
            names = [naming.supernet_node_name(block, c) for c in range(width)]
            copies.append(
                [builder.make_block(block, copy_index=c, name=n) for c, n in enumerate(names)]
            )
        heads = []
        for task in builder.tasks:
            heads.append(builder.make_head(task))
            heads[-1].name = naming.head_name(task.name)
    for block, layers in enumerate(copies):
        reason = fusion.copies_reason(layers)
        if reason is not None:
            warnings.warn(
                f"Building a separate supernet: the nodes of block {block} cannot be "
                f"stacked ({reason}).",
                UserWarning,
                stacklevel=3,
            )
            return None
    with seeded_layers(builder.seed, salt="fusion"):
        h = StackGroups(widths[0], name=naming.stack_groups_name())(inputs[tasks[0]])
        for block, layers in enumerate(copies):
            if block > 0:
                h = routers[block](h)
            _, h = fusion.stack_copies(layers, h, naming.stacked_block_name(block))
        # Heads of one config are one `StackedBlock` too (task `t` reads row `t`).
        outputs = fusion._fused_heads(
            h, dict(zip(tasks, heads)), {task: t for t, task in enumerate(tasks)}
        )
    return inputs, outputs


# Reading the structure back from the functional graph.


def _not_a_supernet(supernet, why):
    return ValueError(
        "Expected a supernet made by `build_supernet`: a functional model whose output is a "
        "dict keyed by task name, each task's head reading one node, each node reading the "
        f"input or one output of a `GumbelRouter`. Received the model "
        f"{getattr(supernet, 'name', supernet)!r}: {why}"
    )


def _history(argument):
    """`(layer name, tensor index)` of a serialised Keras tensor, or None."""
    if isinstance(argument, dict) and argument.get("class_name") == "__keras_tensor__":
        layer, _, index = argument["config"]["keras_history"]
        return layer, int(index)
    return None


def _single_input(layer_config):
    """`(layer name, tensor index)` of a layer's only input, or None."""
    nodes = layer_config.get("inbound_nodes") or []
    if len(nodes) != 1 or len(nodes[0].get("args", [])) != 1:
        return None
    return _history(nodes[0]["args"][0])


def _split_source(layer_config):
    """`(layer name, tensor index)` of the joined tensor a `SplitTaskBatches` cuts, or None."""
    nodes = layer_config.get("inbound_nodes") or []
    if len(nodes) != 1 or len(nodes[0].get("args", [])) != 1:
        return None
    argument = nodes[0]["args"][0]
    return _history(argument[0]) if isinstance(argument, list) and argument else None


def _router_parents(layer_config):
    """Names of the layers feeding a `GumbelRouter`, in parent order, or None."""
    nodes = layer_config.get("inbound_nodes") or []
    if len(nodes) != 1 or len(nodes[0].get("args", [])) != 1:
        return None
    argument = nodes[0]["args"][0]
    argument = argument if isinstance(argument, list) else [argument]
    parents = [_history(a) for a in argument]
    if any(p is None for p in parents):
        return None
    return [name for name, _ in parents]


class _Structure:
    """What `derive_tree` needs, read from a supernet's functional config.

    Attributes:
        tasks: task names, in output order.
        last_nodes: `{task: the last-layer node its head reads}`.
        feeds: `{node: None (reads the input) or (router name, child)}`.
        parents: `{router name: [parent nodes]}`.
        depth: `{router name: the 0-based index of the layer it feeds}`.
        num_blocks: the number of node layers.

    A node is a layer name, or `(StackedBlock name, row)` in a fused
    supernet (`build_supernet(..., fuse=True)`).
    """

    def __init__(self, supernet):
        if not isinstance(supernet, keras.Model):
            raise _not_a_supernet(supernet, "it is not a Keras model")
        try:
            config = supernet.get_config()
        except NotImplementedError as error:
            raise _not_a_supernet(supernet, "it is not a functional model") from error
        outputs = config.get("output_layers") if isinstance(config, dict) else None
        if not isinstance(outputs, dict) or not outputs:
            raise _not_a_supernet(supernet, f"its outputs are {outputs!r}")
        layers = {layer["name"]: layer for layer in config["layers"]}
        self.tasks = list(outputs)
        self.feeds, self.parents, self.last_nodes = {}, {}, {}
        self.depth = {}
        heads = [_single_input(layers[head]) for head, _, _ in outputs.values()]
        if any(
            layers[head]["class_name"] == "SelectGroup"  # stacked heads
            or (h is not None and layers[h[0]]["class_name"] == "SelectGroup")
            for h, (head, _, _) in zip(heads, outputs.values())
        ):
            self._read_fused(supernet, layers, outputs)
            return
        for task, (head, _, _) in outputs.items():
            source = _single_input(layers[head])
            if source is None or layers[source[0]]["class_name"] in (
                "InputLayer",
                "GumbelRouter",
                naming.JOIN_CLASS,
                naming.SPLIT_CLASS,
            ):
                raise _not_a_supernet(supernet, f"the head of task {task!r} reads no node")
            self.last_nodes[task] = source[0]
            self._visit_node(supernet, layers, source[0])
        for router in self.parents:
            self._router_depth(supernet, router)
        depths = [self._node_depth(node) for node in self.last_nodes.values()]
        if len(set(depths)) != 1:
            raise _not_a_supernet(
                supernet, f"the tasks' heads read nodes at different depths {depths}"
            )
        self.num_blocks = depths[0] + 1

    def _read_fused(self, supernet, layers, outputs):
        """The structure of a fused supernet: nodes are `(StackedBlock name, row)`.

        A task's output is either its head reading a `SelectGroup` of the
        last stacked layer, or (stacked heads) a `SelectGroup` of the heads'
        `StackedBlock`, which reads the last stacked layer directly or
        through a `GatherGroups`; the heads' layer is skipped.
        """
        last = set()
        for task, (head, _, _) in outputs.items():
            if layers[head]["class_name"] == "SelectGroup":  # stacked heads
                row = int(layers[head]["config"]["index"])
                heads = _single_input(layers[head])
                source = None if heads is None else _single_input(layers[heads[0]])
                if heads is None or layers[heads[0]]["class_name"] != "StackedBlock":
                    source = None
                if source is not None and layers[source[0]]["class_name"] == "GatherGroups":
                    row = int(layers[source[0]]["config"]["indices"][row])
                    source = _single_input(layers[source[0]])
            else:
                select = _single_input(layers[head])
                source = None
                if select is not None and layers[select[0]]["class_name"] == "SelectGroup":
                    row = int(layers[select[0]]["config"]["index"])
                    source = _single_input(layers[select[0]])
            if source is None or layers[source[0]]["class_name"] != "StackedBlock":
                raise _not_a_supernet(
                    supernet, f"the head of task {task!r} reads no row of a stacked layer"
                )
            self.last_nodes[task] = (source[0], row)
            last.add(source[0])
        if len(last) != 1:
            raise _not_a_supernet(supernet, f"the heads read different stacked layers {last}")
        stacked, depth = last.pop(), []
        while True:  # from the last layer of nodes back to the input
            depth.append(stacked)
            width = int(layers[stacked]["config"]["num_groups"])
            source = _single_input(layers[stacked])
            kind = None if source is None else layers[source[0]]["class_name"]
            if kind == "StackGroups":
                self.feeds.update({(stacked, c): None for c in range(width)})
                break
            if kind != "GumbelRouter" or not layers[source[0]]["config"].get("stacked"):
                what = "nothing" if source is None else f"{source[0]!r}, a {kind}"
                raise _not_a_supernet(
                    supernet,
                    f"the stacked layer {stacked!r} reads {what}, not a `GumbelRouter` "
                    "(stacked) nor the input's `StackGroups`",
                )
            router = source[0]
            parent = _single_input(layers[router])
            if parent is None or layers[parent[0]]["class_name"] != "StackedBlock":
                raise _not_a_supernet(supernet, f"the router {router!r} reads no stacked layer")
            self.feeds.update({(stacked, c): (router, c) for c in range(width)})
            num_parents = int(layers[parent[0]]["config"]["num_groups"])
            self.parents[router] = [(parent[0], p) for p in range(num_parents)]
            stacked = parent[0]
        self.num_blocks = len(depth)
        for block, name in enumerate(reversed(depth)):
            source = _single_input(layers[name])
            if block > 0:
                self.depth[source[0]] = block

    def _visit_node(self, supernet, layers, node):
        if node in self.feeds:
            return
        source = _single_input(layers[node])
        if source is None:
            raise _not_a_supernet(supernet, f"the layer {node!r} does not have a single input")
        name, index = source
        kind = layers[name]["class_name"]
        if kind == naming.SPLIT_CLASS:  # per-task inputs: the rows of one task
            source = _split_source(layers[name])
            if source is None:
                raise _not_a_supernet(supernet, f"cannot read what the layer {name!r} splits")
            name, index = source
            kind = layers[name]["class_name"]
        if kind in ("InputLayer", naming.JOIN_CLASS):
            self.feeds[node] = None
            return
        if kind != "GumbelRouter":
            raise _not_a_supernet(
                supernet, f"the layer {node!r} reads {name!r}, a {kind}, not a `GumbelRouter`"
            )
        self.feeds[node] = (name, index)
        if name not in self.parents:
            parents = _router_parents(layers[name])
            if parents is None:
                raise _not_a_supernet(supernet, f"cannot read the parents of the router {name!r}")
            self.parents[name] = parents
            for parent in parents:
                self._visit_node(supernet, layers, parent)

    def _node_depth(self, node):
        feed = self.feeds[node]
        return 0 if feed is None else self.depth[feed[0]]

    def _router_depth(self, supernet, router):
        if router not in self.depth:
            depths = {self._node_depth_of_parent(supernet, p) for p in self.parents[router]}
            if len(depths) != 1:
                raise _not_a_supernet(
                    supernet, f"the router {router!r} reads nodes of different depths"
                )
            self.depth[router] = depths.pop() + 1
        return self.depth[router]

    def _node_depth_of_parent(self, supernet, node):
        feed = self.feeds[node]
        return 0 if feed is None else self._router_depth(supernet, feed[0])


def _argmax_parents(supernet, structure):
    """`{router name: [argmax parent index of each child]}` from the routers' logits."""
    choices = {}
    for name in structure.parents:
        router = supernet.get_layer(name)
        logits = np.asarray(keras.ops.convert_to_numpy(router.router_logits))
        choices[name] = [int(p) for p in logits.argmax(axis=-1)]
    return choices


def supernet_parents(supernet):
    """Each node's most likely parent, read from the routers' logits.

    Args:
        supernet: a model made by `build_supernet` (or reloaded from
            `.keras`).

    Returns:
        A dict `{block: parents}` for every block after the first (0-based
        block indices, as `keras_branching.naming` counts them):
        `parents[c]` is the index of the argmax parent of node `c` of that
        block, among the nodes of the block before.

    Raises:
        ValueError: if the model is not a learning-to-branch supernet.

    Example:

    >>> import keras
    >>> from keras_branching.builder import BranchedModelBuilder
    >>> from keras_branching.task import Task
    >>> builder = BranchedModelBuilder(
    ...     (8,), [lambda: keras.layers.Dense(4)] * 3,
    ...     [Task(n, lambda: keras.layers.Dense(1), "mse") for n in "ab"])
    >>> supernet_parents(build_supernet(builder, [1, 2, 2], compile=False))
    {1: [0, 0], 2: [0, 0]}
    """
    structure = _Structure(supernet)
    choices = _argmax_parents(supernet, structure)
    return {
        structure.depth[name]: choices[name] for name in sorted(choices, key=structure.depth.get)
    }


def router_probabilities(supernet):
    """Every router's parent probabilities (softmax of its logits).

    Args:
        supernet: a model made by `build_supernet` (or reloaded).

    Returns:
        `{router layer name: [[p(child c reads parent p) for p] for c]}`,
        in JSON types, routers in block order.

    Raises:
        ValueError: if the model is not a learning-to-branch supernet.
    """
    structure = _Structure(supernet)
    return {
        name: supernet.get_layer(name).parent_probabilities().astype("float64").tolist()
        for name in sorted(structure.parents, key=structure.depth.get)
    }


def derive_tree(supernet):
    """The `BranchingTree` a trained supernet has learned.

    Every child node takes its argmax parent (the router's most likely
    choice); following those links up from each task's node of the last
    layer gives the task's node at every layer. Tasks that reach the same
    node of layer `l` form one group of partition `l`; nodes that no task
    reaches are pruned. The result is always a valid nested tree, since a
    node has one parent.

    Reads the functional graph (which router output each node reads, which
    nodes each router reads, which node each head reads) and the routers'
    logits, never layer names, so it works on a supernet reloaded from a
    `.keras` file.

    Args:
        supernet: a model made by `build_supernet` (or reloaded).

    Returns:
        A `BranchingTree` over the supernet's task names, with one block per
        layer of the supernet.

    Raises:
        ValueError: if the model is not a learning-to-branch supernet.

    Example:

    >>> import keras
    >>> from keras_branching.builder import BranchedModelBuilder
    >>> from keras_branching.task import Task
    >>> builder = BranchedModelBuilder(
    ...     (8,), [lambda: keras.layers.Dense(4)] * 2,
    ...     [Task(n, lambda: keras.layers.Dense(1), "mse") for n in "abc"])
    >>> derive_tree(build_supernet(builder, [2, 3], compile=False)).groups(0)
    [('a', 'b', 'c')]
    """
    structure = _Structure(supernet)
    choices = _argmax_parents(supernet, structure)
    paths = {}
    for task, node in structure.last_nodes.items():
        path = [node]
        while structure.feeds[path[-1]] is not None:
            router, child = structure.feeds[path[-1]]
            path.append(structure.parents[router][choices[router][child]])
        paths[task] = path[::-1]  # node names at blocks 0..L-1
    partitions = []
    for block in range(structure.num_blocks):
        groups = {}
        for task in structure.tasks:
            groups.setdefault(paths[task][block], []).append(task)
        partitions.append(list(groups.values()))
    return BranchingTree(structure.tasks, partitions)
