"""The learning-to-branch supernet, its router optimizer, and tree derivation.

Method 2 of `docs/methods.md` (Guo, Lee, Ulbricht, ICML 2020). The
supernet has one layer of nodes per block of the builder's backbone:
layer `l` holds `widths[l]` copies of block `l`. A `GumbelRouter` between
consecutive layers lets every node of layer `l` pick one node of layer
`l - 1` as its parent; the nodes of the first layer all read the input, and
task `t`'s head reads node `t` of the last layer. Training the supernet
with `fit` (and a `TemperatureSchedule`) learns the routers' logits along
with the weights; `derive_tree` then reads each child's most likely parent
and returns the `BranchingTree` that the builder builds as a plain model.

Layer names (what `derive_tree` reads, so it also works on a supernet
reloaded from a `.keras` file):

- `block{l}_node{c}`: node `c` (0-based) of layer `l` (1-based, as in the
  builder's `block1_...` names);
- `router_block{l}`: the `GumbelRouter` whose child `c` feeds
  `block{l}_node{c}`, for `l >= 2`; its logits have shape
  `(widths[l - 1], widths[l - 2])`;
- `head_{task}`: each task's head (the builder's names); the model's
  output is a dict keyed by task name.
"""

import numbers
import re

import keras
import numpy as np

from keras_branching._validation import check_positive
from keras_branching.layers.gumbel_router import GumbelRouter
from keras_branching.tree import BranchingTree

ROUTER_LOGITS_NAME = "router_logits"
_NODE_NAME = re.compile(r"^block(\d+)_node(\d+)$")
_ROUTER_NAME = re.compile(r"^router_block(\d+)$")


def _get_optimizer(optimizer):
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer
    return keras.optimizers.get(optimizer)


@keras.saving.register_keras_serializable(package="keras_branching")
class RouterOptimizer(keras.optimizers.Optimizer):
    """Trains router logits with their own optimizer and learning rate.

    Learning to branch trains the routers' logits faster than the network's
    weights. Keras optimizers have a single learning rate, so this wrapper
    holds two: every trainable variable named `router_variable_name`
    (`"router_logits"`, the logits of every `GumbelRouter`) is updated by
    `router_optimizer`, every other one by `optimizer`. Both see the
    gradients of the one loss, in the same step. The wrapper is an ordinary
    Keras optimizer: pass it to `compile`, train with plain `fit` (also with
    `jit_compile=True`), save and reload the model with it (it is registered
    for serialisation). `iterations` and `learning_rate` are those of
    `optimizer` (so learning-rate callbacks act on the weights). Written
    for the TensorFlow backend (it uses the stateful `apply` path).

    Args:
        optimizer: optimizer (instance or name) of all other variables.
        router_optimizer: optimizer (instance or name) of the router
            logits; it must be a different instance.
        router_variable_name: the name of the variables that
            `router_optimizer` trains.
        name: the wrapper's name.

    Example:

    >>> opt = RouterOptimizer(
    ...     keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-2)
    ... )
    >>> round(float(opt.router_optimizer.learning_rate.numpy()), 6)
    0.01
    """

    def __init__(
        self, optimizer, router_optimizer, router_variable_name=ROUTER_LOGITS_NAME, name=None
    ):
        super().__init__(learning_rate=0.0, name=name)
        optimizer = _get_optimizer(optimizer)
        router_optimizer = _get_optimizer(router_optimizer)
        if router_optimizer is optimizer:
            raise ValueError(
                "Expected two different optimizer instances for the weights and the "
                f"router logits. Received the same instance twice: {optimizer!r}"
            )
        if not isinstance(router_variable_name, str) or not router_variable_name:
            raise TypeError(
                "Expected `router_variable_name` to be a non-empty string. "
                f"Received: router_variable_name={router_variable_name!r}"
            )
        self.inner_optimizer = optimizer
        self.router_optimizer = router_optimizer
        self.router_variable_name = router_variable_name

    def _is_router(self, variable):
        return variable.name == self.router_variable_name

    def build(self, var_list):
        var_list = list(var_list)
        self.inner_optimizer.build([v for v in var_list if not self._is_router(v)])
        self.router_optimizer.build([v for v in var_list if self._is_router(v)])
        super().build(var_list)

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables + self.router_optimizer.variables

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
        weights = [(g, v) for g, v in zip(grads, trainable_variables) if not self._is_router(v)]
        routers = [(g, v) for g, v in zip(grads, trainable_variables) if self._is_router(v)]
        if weights:
            self.inner_optimizer.apply(*map(list, zip(*weights)))
        if routers:
            self.router_optimizer.apply(*map(list, zip(*routers)))

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
        self.inner_optimizer.finalize_variable_values(
            [v for v in var_list if not self._is_router(v)]
        )
        self.router_optimizer.finalize_variable_values([v for v in var_list if self._is_router(v)])

    def get_config(self):
        return {
            "name": self.name,
            "optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "router_optimizer": keras.saving.serialize_keras_object(self.router_optimizer),
            "router_variable_name": self.router_variable_name,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("optimizer", "router_optimizer"):
            config[key] = keras.saving.deserialize_keras_object(
                config[key], custom_objects=custom_objects
            )
        return cls(**config)


def router_optimizer(optimizer, router_learning_rate):
    """A `RouterOptimizer` whose router logits use `router_learning_rate`.

    The router optimizer is a copy of `optimizer` (same class and settings)
    with its learning rate replaced.

    Args:
        optimizer: optimizer instance or name for the weights.
        router_learning_rate: learning rate of the router logits, > 0.

    Returns:
        A `RouterOptimizer`.
    """
    check_positive("router_learning_rate", router_learning_rate)
    optimizer = _get_optimizer(optimizer)
    config = optimizer.get_config()
    weights = optimizer.__class__.from_config(dict(config))
    config["learning_rate"] = float(router_learning_rate)
    config["name"] = f"{config.get('name') or 'optimizer'}_router"
    routers = optimizer.__class__.from_config(config)
    return RouterOptimizer(weights, routers)


def check_widths(builder, widths):
    """Validates supernet widths against a builder; returns them as a list of ints."""
    if isinstance(widths, (str, bytes)) or not isinstance(widths, (list, tuple)):
        raise TypeError(
            f"Expected `widths` to be a list of ints, one per block. Received: widths={widths!r}"
        )
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, numbers.Integral):
            raise TypeError(f"Expected every width to be an int. Received: widths={list(widths)}")
    widths = [int(w) for w in widths]
    if len(widths) != builder.num_blocks:
        raise ValueError(
            f"Expected one width per block ({builder.num_blocks} widths). "
            f"Received: widths={widths} ({len(widths)} widths)"
        )
    if any(w < 1 for w in widths):
        raise ValueError(f"Expected every width >= 1. Received: widths={widths}")
    if widths[-1] != len(builder.tasks):
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
    **compile_kwargs,
):
    """Builds (and compiles) the learning-to-branch supernet of a builder.

    Layer `l` has `widths[l]` fresh copies of block `l`; `GumbelRouter`s
    link consecutive layers; task `t` (in the builder's order) reads node
    `t` of the last layer through its head. Layer names are listed in the
    module docstring.

    Args:
        builder: a `BranchedModelBuilder`.
        widths: number of nodes per block; the last must equal the number
            of tasks. Widths growing with depth are usual (e.g. `[1, 2, 4]`
            for 4 tasks, or `[2, 4, 8, 16, 40]` for CelebA's 40).
        temperature: the routers' initial temperature, > 0 (anneal it with
            `keras_branching.callbacks.TemperatureSchedule`).
        router_learning_rate: learning rate of the router logits. `None`
            uses the builder's optimizer for everything; a number compiles
            with `router_optimizer(builder.optimizer, router_learning_rate)`.
        seed: optional int; router `l` samples with seed `seed + l`.
        compile: whether to compile the model.
        **compile_kwargs: extra arguments for `compile` (`jit_compile`...).

    Returns:
        The supernet, a `keras.Model` named `"supernet"` whose output is a
        dict keyed by task name.

    Raises:
        TypeError, ValueError: for widths of the wrong type or length, a
            width below 1, or a last width other than the number of tasks.

    Example:

    >>> import keras
    >>> from keras_branching.builder import BranchedModelBuilder
    >>> from keras_branching.task import Task
    >>> builder = BranchedModelBuilder(
    ...     (8,), [lambda: keras.layers.Dense(4)] * 2,
    ...     [Task(n, lambda: keras.layers.Dense(1), "mse") for n in "abc"])
    >>> supernet = build_supernet(builder, [2, 3])
    >>> tuple(supernet.get_layer("router_block2").router_logits.shape)
    (3, 2)
    """
    widths = check_widths(builder, widths)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"Expected `seed` to be an int or None. Received: seed={seed!r}")
    inputs = builder.make_input()
    nodes = []
    for block, width in enumerate(widths):
        if block == 0:
            parents = [inputs] * width
        else:
            router = GumbelRouter(
                width,
                temperature=temperature,
                seed=None if seed is None else int(seed) + block,
                name=f"router_block{block + 1}",
            )
            parents = router(nodes)
        nodes = [
            builder.make_block(block, copy_index=c, name=f"block{block + 1}_node{c}")(parent)
            for c, parent in enumerate(parents)
        ]
    outputs = {task.name: builder.make_head(task)(nodes[t]) for t, task in enumerate(builder.tasks)}
    model = keras.Model(inputs, outputs, name="supernet")
    if compile:
        optimizer = None  # the builder's
        if router_learning_rate is not None:
            optimizer = router_optimizer(builder.optimizer, router_learning_rate)
        builder.compile(model, optimizer=optimizer, **compile_kwargs)
    return model


def _producer(model, tensor):
    """The layer of `model` whose (single) output is `tensor`."""
    for layer in model.layers:
        if any(out is tensor for out in keras.tree.flatten(layer.output)):
            return layer
    return None


def supernet_parents(supernet):
    """Each node's most likely parent, read from the routers' logits.

    Returns:
        A dict `{block: parents}` for blocks `2..L` (1-based): `parents[c]`
        is the index of node `c`'s argmax parent in the block before.
    """
    parents = {}
    for layer in supernet.layers:
        match = _ROUTER_NAME.match(layer.name)
        if match and isinstance(layer, GumbelRouter):
            logits = np.asarray(keras.ops.convert_to_numpy(layer.router_logits))
            parents[int(match.group(1))] = [int(p) for p in logits.argmax(axis=-1)]
    return parents


def derive_tree(supernet):
    """The `BranchingTree` a trained supernet has learned.

    Every child node takes its argmax parent (the router's most likely
    choice); following those links up from each task's node of the last
    layer gives the task's node at every layer. Tasks that reach the same
    node of layer `l` form one group of partition `l`; nodes that no task
    reaches are pruned. The result is always a valid nested tree, since a
    node has one parent.

    Reads only layer names and router logits (see the module docstring),
    so it works on a supernet reloaded from a `.keras` file.

    Args:
        supernet: a model made by `build_supernet` (or reloaded).

    Returns:
        A `BranchingTree` over the supernet's task names, with one block per
        layer of the supernet.

    Raises:
        ValueError: if the model is not a learning-to-branch supernet.
    """
    if not isinstance(supernet, keras.Model) or not isinstance(supernet.output, dict):
        raise ValueError(
            "Expected a supernet made by `build_supernet` (a model whose output is a "
            f"dict keyed by task name). Received: {supernet!r}"
        )
    names = [layer.name for layer in supernet.layers]
    num_blocks = max((int(m.group(1)) for m in map(_NODE_NAME.match, names) if m), default=0)
    parents = supernet_parents(supernet)
    if num_blocks == 0 or sorted(parents) != list(range(2, num_blocks + 1)):
        raise ValueError(
            f"Expected a supernet made by `build_supernet`, with layers `block{{l}}_node{{c}}` "
            f"and a `GumbelRouter` `router_block{{l}}` for every block after the first. "
            f"Received a model {supernet.name!r} with layers {names}"
        )
    tasks = list(supernet.output)
    paths = {}
    for task, tensor in supernet.output.items():
        head = _producer(supernet, tensor)
        node = None if head is None else _producer(supernet, head.input)
        match = None if node is None else _NODE_NAME.match(node.name)
        if match is None or int(match.group(1)) != num_blocks:
            raise ValueError(
                f"Cannot find the last-block node that task {task!r} reads in the "
                f"supernet {supernet.name!r}: expected its head to read a layer named "
                f"`block{num_blocks}_node{{c}}`."
            )
        path = [int(match.group(2))]
        for block in range(num_blocks, 1, -1):
            path.append(parents[block][path[-1]])
        paths[task] = path[::-1]  # node index at blocks 1..L
    partitions = []
    for block in range(num_blocks):
        groups = {}
        for task in tasks:
            groups.setdefault(paths[task][block], []).append(task)
        partitions.append(list(groups.values()))
    return BranchingTree(tasks, partitions)
