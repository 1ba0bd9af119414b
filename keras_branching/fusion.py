"""Fused tree models: every block depth as one `StackedBlock`, and back.

`BranchedModelBuilder.build(tree, fuse=True)` builds a fused model: the
copies of each block depth are one `StackedBlock` computing every group at
once on tensors laid out `(batch, groups, ...)`; `StackGroups` and
`GatherGroups` (which record the tree) replace the `BranchPoint`s, and each
task's head reads its group's row through `SelectGroup`. A fused model has
the same parameters as the separate one (`count_params(tree)` holds for
both) and computes the same outputs; `fuse` and `unfuse` move a model's
weights between the two forms. `should_fuse` is the rule behind
`build(tree, fuse="auto")`. See `docs/fusion.md`.
"""

import random
import warnings

import keras

from keras_branching import naming
from keras_branching.layers.group_gather import GatherGroups, SelectGroup, StackGroups
from keras_branching.layers.stacked import (
    StackedBlock,
    block_leaves,
    block_weights,
    stack_reason,
    variable_numpy,
)


def can_stack(block_layer):
    """Whether one copy of a block can be stacked into a `StackedBlock`.

    Args:
        block_layer: a Keras layer (one copy of a block).

    Returns:
        True for `Dense`, `Conv2D` (channels_last, ungrouped),
        `BatchNormalization`, `LayerNormalization`, `GroupNormalization`
        (last axis), weightless per-example layers (activations, pooling,
        `Dropout`, `Flatten`, ...) and `keras.Sequential` blocks of them,
        without regularisers or constraints; False otherwise
        (`keras_branching.layers.stacked.stack_reason` says why).

    Example:

    >>> import keras
    >>> can_stack(keras.Sequential([keras.layers.Dense(4), keras.layers.ReLU()]))
    True
    >>> can_stack(keras.layers.GRU(4))
    False
    """
    return stack_reason(block_layer) is None


def _sample_blocks(builder):
    """One fresh copy of each block, without touching Python's global `random` state."""
    state = random.getstate()
    try:
        return [builder.make_block(d) for d in range(builder.num_blocks)]
    finally:
        random.setstate(state)


# Measured (docs/performance.md, benchmarks/fused_copies.py): 20 or 40 copies
# of a dense block train faster fused on both backends, with and without XLA
# (1.3x to 3.7x); 2 to 8 copies are slower fused in half the rows (0.71x
# to 2.2x). 16 sits between the two.
MIN_COPIES_TO_FUSE = 16


def _is_convolutional(layer):
    return any(isinstance(leaf, keras.layers.Conv2D) for leaf in block_leaves(layer))


def should_fuse(builder, tree):
    """The rule of `build(tree, fuse="auto")`: whether to build `tree` fused.

    Fuse when the model has a single shared input (per-task input models
    stay separate: their groups see different batches), the builder has no
    `gradient_scale`, some block depth has at least `MIN_COPIES_TO_FUSE`
    (16) copies (with fewer, fusing was as often slower as faster in
    `benchmarks/fused_copies.py`), every block can be stacked (`can_stack`)
    and no block is convolutional (a stacked convolution is a grouped
    convolution, many times slower on TensorFlow without XLA). See
    docs/performance.md for the measurements. The rule itself lives in
    `fuse_rule`, shared with the supernet.

    Args:
        builder: a `BranchedModelBuilder`.
        tree: a `BranchingTree` over the builder's tasks and blocks.

    Returns:
        A bool.

    Example:

    >>> import keras
    >>> from keras_branching import BranchedModelBuilder, BranchingTree, Task
    >>> builder = BranchedModelBuilder(
    ...     (4,),
    ...     [lambda: keras.layers.Dense(3)] * 2,
    ...     [Task(f"t{i}", head=lambda: keras.layers.Dense(1), loss="mse") for i in range(16)],
    ... )
    >>> should_fuse(builder, builder.independent_tree())  # 16 copies
    True
    >>> should_fuse(builder, builder.shared_tree())
    False
    """
    builder.check_tree(tree)
    return fuse_rule(builder, tree.num_copies())


def unstackable_block(builder):
    """`(block index, reason)` of the first block that cannot be stacked, or None."""
    for index, layer in enumerate(_sample_blocks(builder)):
        reason = stack_reason(layer)
        if reason is not None:
            return index, reason
    return None


def build_fused(builder, tree, compile=True, **compile_kwargs):
    """`builder.build(tree, fuse=True)`: see `BranchedModelBuilder.build`.

    Falls back to the separate model, with a `UserWarning` naming the block
    and the reason, when a block cannot be stacked.

    Raises:
        ValueError: for a builder with one input per task or with a
            `gradient_scale`.
    """
    from keras_branching.builder import seeded_layers
    from keras_branching.models import TaskModel

    builder.check_tree(tree)
    if builder.per_task_inputs:
        raise ValueError(
            "Expected a builder with one shared input for `fuse=True`: with one input "
            "per task the groups see different batches. Received per-task inputs for "
            f"{list(builder.task_names)}"
        )
    if builder.gradient_scale is not None:
        raise ValueError(
            "Expected a builder without `gradient_scale` for `fuse=True`: the fused "
            "model's `GatherGroups` add up the children's gradients as they are. "
            f"Received: gradient_scale={builder.gradient_scale!r}"
        )
    blocked = unstackable_block(builder)
    if blocked is not None:
        warnings.warn(
            f"Building separate copies: block {blocked[0]} cannot be stacked ({blocked[1]}).",
            UserWarning,
            stacklevel=3,
        )
        return builder.build(tree, compile=compile, fuse=False, **compile_kwargs)
    # The copies and heads are made in the order the separate model makes
    # them, so with a seed both forms start from the same weights.
    with seeded_layers(builder.seed):
        x = builder.make_input()
        copies = {
            d: [
                builder.make_block(d, copy_index=i, name=naming.block_name(d, g, len(tree.tasks)))
                for i, g in enumerate(tree.groups(d))
            ]
            for d in range(tree.num_blocks)
        }
        heads = {t: builder.make_head(t) for t in builder.task_names}
    with seeded_layers(builder.seed, salt="fusion"):
        groups = tree.groups(0)
        h = StackGroups(len(groups), groups=groups, name=naming.stack_groups_name())(x)
        for d in range(tree.num_blocks):
            groups = tree.groups(d)
            if d > 0 and groups != tree.groups(d - 1):
                indices = [tree.parent(d, i) for i in range(len(groups))]
                h = GatherGroups(indices, groups=groups, name=naming.gather_groups_name(d))(h)
            group_shape = (None, *h.shape[2:])
            for layer in copies[d]:
                if not layer.built:
                    layer.build(group_shape)
            stacked = StackedBlock(copies[d][0], len(groups), name=naming.stacked_block_name(d))
            h = stacked(h)
            for g, layer in enumerate(copies[d]):
                stacked.set_group_weights(g, [variable_numpy(w) for w in block_weights(layer)])
        last = tree.groups(tree.num_blocks - 1)
        rows = {t: next(i for i, g in enumerate(last) if t in g) for t in builder.task_names}
        outputs = _fused_heads(h, heads, rows)
    model = TaskModel(x, outputs, name="branched_model")
    builder._warn_identical_copies(copies)
    if compile:
        builder.compile(model, **compile_kwargs)
    return model


def _fused_heads(h, heads, rows):
    """`{task: output}`: heads of one config stacked, each task reading its own row.

    Tasks whose heads have the same config (up to names and seeds) and can
    be stacked share one `StackedBlock` (fed by a `GatherGroups` without
    recorded groups when the tasks' rows are not simply `0..G-1`); the
    output of task `t` is then a `SelectGroup` named as its head would be,
    so losses and metrics by task name are unchanged. Other heads read
    their row through `SelectGroup` as separate layers.
    """
    kinds = {}
    for task, head in heads.items():
        if stack_reason(head) is None:
            key = repr(_without_names_and_seeds(keras.saving.serialize_keras_object(head)))
            kinds.setdefault(key, []).append(task)
    outputs, index = {}, 0
    for tasks in kinds.values():
        if len(tasks) < 2:
            continue
        indices = [rows[t] for t in tasks]
        x = h
        if indices != list(range(h.shape[1])):
            x = GatherGroups(indices, name=naming.head_rows_name(index))(h)
        layers = [heads[t] for t in tasks]
        names = [layer.name for layer in layers]
        _, y = stack_copies(layers, x, naming.stacked_heads_name(index))
        for i, (task, name) in enumerate(zip(tasks, names)):
            outputs[task] = SelectGroup(i, name=name)(y)
        index += 1
    for task, head in heads.items():
        if task not in outputs:
            select = SelectGroup(rows[task], name=naming.select_group_name(task))
            outputs[task] = head(select(h))
    return {t: outputs[t] for t in heads}


def is_fused(model):
    """Whether `model` is a fused tree model (holds a `StackedBlock`).

    Example:

    >>> import keras
    >>> is_fused(keras.Sequential([keras.layers.Dense(1)]))
    False
    """
    return any(isinstance(layer, StackedBlock) for layer in model.layers)


def _fused_parts(model):
    """`(tree, [StackedBlock per depth], {task: head})` of a fused model.

    A head is a layer, or `(StackedBlock of the heads, row)` for stacked heads.
    """
    from keras_branching.tree import BranchingTree

    chains = naming.task_block_chains(model, skip_classes=())
    tasks = list(chains)
    config = model.get_config()
    heads = {t: model.get_layer(config["output_layers"][t][0]) for t in tasks}
    stacked, partitions, current = [], [], None
    selected = {}
    for task in tasks:
        layers = [model.get_layer(name) for name in chains[task]]
        if (
            isinstance(heads[task], SelectGroup) and layers and isinstance(layers[-1], StackedBlock)
        ):  # a stacked head: (StackedBlock of the heads, row)
            row = heads[task].index
            heads[task] = (layers[-1], row)
            layers = layers[:-1]
            if layers and isinstance(layers[-1], GatherGroups) and layers[-1].groups is None:
                row = layers[-1].indices[row]
                layers = layers[:-1]
            selected[task] = row
        elif not layers or not isinstance(layers[-1], SelectGroup):
            raise ValueError(
                f"Expected the head of task {task!r} to read a `SelectGroup`; this model "
                "was not built by `BranchedModelBuilder.build(tree, fuse=True)`."
            )
        else:
            selected[task] = layers[-1].index
        if task == tasks[0]:
            for layer in layers:
                if isinstance(layer, (StackGroups, GatherGroups)):
                    current = layer.groups
                elif isinstance(layer, StackedBlock):
                    if current is None:
                        raise ValueError(
                            f"The stacked block {layer.name!r} has no recorded groups; this "
                            "model was not built by `BranchedModelBuilder.build(tree, fuse=True)`."
                        )
                    stacked.append(layer)
                    partitions.append(current)
    last = partitions[-1]
    for task, row in selected.items():
        if row >= len(last) or task not in last[row]:
            raise ValueError(
                f"Task {task!r} reads row {row} of the last block, whose groups are {last}."
            )
    return BranchingTree(tasks, partitions), stacked, heads


def fused_tree(model):
    """The `BranchingTree` of a fused model (`read_tree` calls this for fused models)."""
    return _fused_parts(model)[0]


def _separate_parts(model):
    """`(tree, {(depth, group index): block copy}, {task: head layer})` of a separate model."""
    from keras_branching.builder import read_tree

    tree = read_tree(model)
    chains = naming.task_block_chains(model)
    config = model.get_config()
    heads = {t: model.get_layer(config["output_layers"][t][0]) for t in tree.tasks}
    copies = {
        (d, i): model.get_layer(chains[g[0]][d])
        for d in range(tree.num_blocks)
        for i, g in enumerate(tree.groups(d))
    }
    return tree, copies, heads


def _builder_from_parts(model, blocks, heads):
    from keras_branching.builder import BranchedModelBuilder
    from keras_branching.task import Task

    if len(model.inputs) != 1:
        raise ValueError(
            "Expected a model with one shared input (models with one input per task are "
            f"never fused). Received {len(model.inputs)} inputs"
        )
    configs = {t: keras.saving.serialize_keras_object(_head_layer(h)) for t, h in heads.items()}
    tasks = [
        Task(t, head=lambda c=c: keras.saving.deserialize_keras_object(c), loss="mse")
        for t, c in configs.items()
    ]
    return BranchedModelBuilder(model.inputs[0], blocks, tasks)


def _head_layer(head):
    """A head as a layer: itself, or a fresh copy of a stacked head `(StackedBlock, row)`."""
    return head[0].make_copy() if isinstance(head, tuple) else head


def _head_values(head):
    if isinstance(head, tuple):
        return head[0].group_weights(head[1])
    return [variable_numpy(w) for w in block_weights(head)]


def _copy_heads(source, target):
    """Copies head weights; a head is a layer or a stacked head `(StackedBlock, row)`."""
    for task, head in source.items():
        values, other = _head_values(head), target[task]
        if isinstance(other, tuple):
            other[0].set_group_weights(other[1], values)
        else:
            for variable, value in zip(block_weights(other), values):
                variable.assign(value)


def unfuse(model, builder=None):
    """The separate-copies model of a fused model, with the same weights.

    Args:
        model: a fused model (`build(tree, fuse=True)`), possibly reloaded.
        builder: optional; the `BranchedModelBuilder` that built it. With
            it, the result is built and compiled by it (same names, losses
            and metrics); without it, the blocks and heads are re-created
            from the fused model's configs and the result is not compiled.

    Returns:
        A `TaskModel` computing the same outputs (within float rounding).

    Raises:
        ValueError: if `model` is not a fused tree model.

    Example:

    >>> import keras, numpy as np
    >>> from keras_branching import BranchedModelBuilder, Task
    >>> builder = BranchedModelBuilder(
    ...     (4,),
    ...     [lambda: keras.layers.Dense(3)] * 2,
    ...     [Task(t, head=lambda: keras.layers.Dense(1), loss="mse") for t in "ab"],
    ... )
    >>> fused = builder.build(builder.independent_tree(), fuse=True)
    >>> separate = unfuse(fused)
    >>> x = np.ones((2, 4), "float32")
    >>> bool(np.allclose(fused(x)["a"], separate(x)["a"], atol=1e-5))
    True
    """
    if not is_fused(model):
        raise ValueError(
            f"Expected a fused model (holding a `StackedBlock`). Received: {model.name!r}"
        )
    tree, stacked, heads = _fused_parts(model)
    if builder is None:
        builder = _builder_from_parts(model, [s.make_copy() for s in stacked], heads)
        separate = builder.build(tree, compile=False, fuse=False)
    else:
        separate = builder.build(tree, fuse=False)
    _, copies, new_heads = _separate_parts(separate)
    for (d, i), layer in copies.items():
        for variable, value in zip(block_weights(layer), stacked[d].group_weights(i)):
            variable.assign(value)
    _copy_heads(heads, new_heads)
    return separate


def fuse(model, builder=None):
    """The fused model of a separate-copies tree model, with the same weights.

    Args:
        model: a model built by `BranchedModelBuilder.build(tree)` (one
            shared input, every block stackable), possibly reloaded.
        builder: optional; the `BranchedModelBuilder` that built it. With
            it, the result is built and compiled by it; without it, the
            blocks and heads are re-created from the model's configs and
            the result is not compiled.

    Returns:
        A fused `TaskModel` computing the same outputs (within float rounding).

    Raises:
        ValueError: for a model with one input per task, or a block that
            cannot be stacked (the message names it and says why).

    Example:

    >>> import keras, numpy as np
    >>> from keras_branching import BranchedModelBuilder, Task
    >>> builder = BranchedModelBuilder(
    ...     (4,),
    ...     [lambda: keras.layers.Dense(3)] * 2,
    ...     [Task(t, head=lambda: keras.layers.Dense(1), loss="mse") for t in "ab"],
    ... )
    >>> separate = builder.build(builder.independent_tree(), fuse=False)
    >>> fused = fuse(separate, builder)
    >>> x = np.ones((2, 4), "float32")
    >>> bool(np.allclose(fused(x)["b"], separate(x)["b"], atol=1e-5))
    True
    """
    tree, copies, heads = _separate_parts(model)
    for (d, _), layer in copies.items():
        reason = stack_reason(layer)
        if reason is not None:
            raise ValueError(
                f"Cannot fuse: block {d} ({layer.name!r}) cannot be stacked: {reason}."
            )
    if builder is None:
        blocks = [copies[(d, 0)] for d in range(tree.num_blocks)]
        builder = _builder_from_parts(model, blocks, heads)
        fused = build_fused(builder, tree, compile=False)
    else:
        if builder.per_task_inputs:
            raise ValueError(
                "Expected a model with one shared input: per-task input models are never fused."
            )
        fused = build_fused(builder, tree)
    _, stacked, new_heads = _fused_parts(fused)
    for (d, i), layer in copies.items():
        stacked[d].set_group_weights(i, [variable_numpy(w) for w in block_weights(layer)])
    _copy_heads(heads, new_heads)
    return fused


# Helpers for the other fused models (the supernet, routing experts).


def _without_names_and_seeds(config):
    """A layer config with every `name` and `seed` dropped, to compare copies of a block."""
    if isinstance(config, dict):
        return {
            k: _without_names_and_seeds(v)
            for k, v in config.items()
            if k not in ("name", "seed", "build_config", "build_input_shape")
        }
    if isinstance(config, list):
        return [_without_names_and_seeds(v) for v in config]
    return config


def copies_reason(copies):
    """Why a list of block copies cannot be one `StackedBlock`, or None.

    The copies stack when the first can be stacked (`can_stack`) and all of
    them have the same config up to names and initialiser seeds.

    Args:
        copies: a non-empty list of Keras layers.

    Returns:
        None, or a one-line reason.

    Example:

    >>> import keras
    >>> copies_reason([keras.layers.Dense(2), keras.layers.Dense(2)]) is None
    True
    >>> copies_reason([keras.layers.Dense(2), keras.layers.Dense(3)])
    'the copies differ in their configs (first and copy 1)'
    """
    reason = stack_reason(copies[0])
    if reason is not None:
        return reason
    first = _without_names_and_seeds(keras.saving.serialize_keras_object(copies[0]))
    for index, other in enumerate(copies[1:], start=1):
        if _without_names_and_seeds(keras.saving.serialize_keras_object(other)) != first:
            return f"the copies differ in their configs (first and copy {index})"
    return None


def stack_copies(copies, inputs, name):
    """Calls one `StackedBlock` holding `copies` (built, their weights kept) on `inputs`.

    Args:
        copies: G copies of one block (`copies_reason(copies)` None),
            built or not; copy `g`'s weights become row `g`.
        inputs: a tensor `(batch, G, ...)`, symbolic or not.
        name: the `StackedBlock`'s name.

    Returns:
        `(stacked layer, its output)`.
    """
    group_shape = (None, *inputs.shape[2:])
    for layer in copies:
        if not layer.built:
            layer.build(group_shape)
    stacked = StackedBlock(copies[0], len(copies), name=name)
    outputs = stacked(inputs)
    for g, layer in enumerate(copies):
        stacked.set_group_weights(g, [variable_numpy(w) for w in block_weights(layer)])
    return stacked, outputs


def fuse_rule(builder, copies_per_depth):
    """The rule behind `fuse="auto"` for any model of copies (trees, the supernet).

    Args:
        builder: a `BranchedModelBuilder` (or a view of one).
        copies_per_depth: the number of copies of each block.

    Returns:
        A bool: see `should_fuse`.
    """
    if builder.per_task_inputs or max(copies_per_depth) < MIN_COPIES_TO_FUSE:
        return False
    if getattr(builder, "gradient_scale", None) is not None:  # not in the fused layers
        return False
    blocks = _sample_blocks(builder)
    return all(can_stack(b) and not _is_convolutional(b) for b in blocks)
