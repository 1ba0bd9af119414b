"""Every layer name the library gives, built in one place, and the one graph reader.

Names make `model.summary()` and plots readable; they are not an API. Code
that needs a model's structure reads the functional graph
(`task_block_chains`) or the layer objects the builder kept, never a name
pattern, so renaming a layer here changes nothing but the labels.
"""

import re

_MAX_NAME_TASKS = 4
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def sanitize(name):
    """`name` with every character TensorFlow scopes reject replaced by `_`."""
    return _UNSAFE.sub("_", name)


# Tree models (`BranchedModelBuilder`).


def block_name(block, group, num_tasks):
    """The copy of `block` (0-based) shared by the tasks of `group`.

    Reads `block1_a-b` (1-based block, task names); long groups read
    `block1_a-b-c-d-12more`; a group of every task reads `block1_shared`.
    """
    return f"block{block + 1}_" + group_label(group, num_tasks)


def group_label(group, num_tasks):
    """A group of tasks in a layer name: `a-b`, `a-b-c-d-12more`, or `shared` for every task."""
    if len(group) == num_tasks and num_tasks > 1:
        return "shared"
    names = [sanitize(t) for t in group]
    if len(names) > _MAX_NAME_TASKS:
        names = names[:_MAX_NAME_TASKS] + [f"{len(group) - _MAX_NAME_TASKS}more"]
    return "-".join(names)


def head_name(task):
    """The head of `task`."""
    return f"head_{sanitize(task)}"


def split_name(source):
    """The `BranchPoint` that splits the output of the layer named `source`."""
    return f"split_after_{source}"


def stacked_block_name(block):
    """The `StackedBlock` holding every copy of `block` (0-based) in a fused tree model."""
    return f"block{block + 1}_stacked"


def stack_groups_name():
    """The `StackGroups` repeating the input once per group of a fused model's first block."""
    return "inputs_by_group"


def gather_groups_name(block):
    """The `GatherGroups` giving each group of `block` (0-based) its parent's row."""
    return f"groups_block{block + 1}"


def select_group_name(task):
    """The `SelectGroup` giving the head of `task` its group's row in a fused model."""
    return f"rows_{sanitize(task)}"


def stacked_heads_name(index):
    """The `StackedBlock` holding the `index`-th (0-based) set of task heads of one config.

    Example:

    >>> stacked_heads_name(0)
    'heads1_stacked'
    """
    return f"heads{index + 1}_stacked"


def head_rows_name(index):
    """The `GatherGroups` giving the `index`-th (0-based) stacked heads their tasks' rows.

    Example:

    >>> head_rows_name(0)
    'heads1_rows'
    """
    return f"heads{index + 1}_rows"


def task_model_name(task):
    """A one-task model cut out of a multi-task one."""
    return f"task_{sanitize(task)}"


# Learning-to-branch supernets.


def supernet_node_name(block, node):
    """Node `node` (0-based) of supernet layer `block` (0-based)."""
    return f"block{block + 1}_node{node}"


def router_name(block):
    """The `GumbelRouter` that picks the parents of supernet layer `block` (0-based)."""
    return f"router_block{block + 1}"


def router_output_name(block, child):
    """Output `child` (0-based) of the router of supernet layer `block` (0-based), as the
    source of a `SplitTaskBatches`."""
    return f"{router_name(block)}_{child}"


# Routing models.


def expert_name(layer, expert):
    """Expert `expert` (0-based) of routed layer `layer` (0-based)."""
    return f"expert_{layer + 1}_{expert}"


def gate_name(layer, expert):
    """The gated route into expert `expert` of layer `layer` (both 0-based)."""
    return f"gate_{layer + 1}_{expert}"


def tower_gate_name(task):
    """The gated route into the tower of `task`."""
    return f"gate_{sanitize(task)}"


def stacked_experts_name(layer):
    """The `StackedBlock` holding every used expert of routed layer `layer` (0-based).

    Example:

    >>> stacked_experts_name(0)
    'experts_1_stacked'
    """
    return f"experts_{layer + 1}_stacked"


def expert_inputs_name(layer):
    """The layer giving each expert of fused routed layer `layer` (0-based) its input row.

    Example:

    >>> expert_inputs_name(1)
    'experts_2_inputs'
    """
    return f"experts_{layer + 1}_inputs"


def expert_output_name(layer, expert):
    """The `SelectGroup` reading expert `expert`'s row of fused routed layer `layer`.

    Example:

    >>> expert_output_name(0, 2)
    'expert_1_2_out'
    """
    return f"{expert_name(layer, expert)}_out"


def supernet_route_name(what):
    """The searchable route of the routing supernet into `what` (an expert or tower label)."""
    return f"route_{what}"


# Inputs.

SHARED_INPUT = "inputs"


def input_name(task):
    """The input of `task` in a model with one input per task."""
    return sanitize(task)


def join_batches_name(source, group, num_tasks):
    """The `JoinTaskBatches` joining the rows of the tasks of `group` taken from `source`.

    `source` is the name of the layer whose output (or `SHARED_INPUT` for
    the tasks' inputs) is joined: `inputs_for_a-b`, `expert_1_0_for_a-c`.
    """
    return f"{source}_for_{group_label(group, num_tasks)}"


def split_batches_name(source):
    """The `SplitTaskBatches` cutting the output of the layer `source` into its tasks' rows."""
    return f"{source}_by_task"


def unique_name(name, taken):
    """`name`, or `name_1`, `name_2`... if `taken` (a set of names, updated) already holds it."""
    candidate, index = name, 0
    while candidate in taken:
        index += 1
        candidate = f"{name}_{index}"
    taken.add(candidate)
    return candidate


# Allocation networks.


def allocation_layer_name(layer, suffix):
    """A part of routed layer `layer` (0-based): `components`, `allocation`, `joint`."""
    return f"layer{layer + 1}_{suffix}"


def component_name(layer, component, task=None):
    """Component `component` (0-based, or None for a layer's only one) of routed
    layer `layer`, optionally the copy owned by `task` in a static model."""
    name = f"layer{layer + 1}" + ("" if component is None else f"_c{component + 1}")
    return name if task is None else f"{name}_{sanitize(task)}"


def component_mean_name(layer, task):
    """The mean of the components `task` uses at layer `layer`."""
    return f"layer{layer + 1}_mean_{sanitize(task)}"


def empty_allocation_name(layer, task):
    """The zeros that stand for a layer where `task` uses no component."""
    return f"layer{layer + 1}_empty_{sanitize(task)}"


# Reading structure back from the functional graph.

JOIN_CLASS = "JoinTaskBatches"
SPLIT_CLASS = "SplitTaskBatches"


def _history(argument):
    """Name of the layer that made a serialised Keras tensor, or None."""
    if isinstance(argument, dict) and argument.get("class_name") == "__keras_tensor__":
        return argument["config"]["keras_history"][0]
    return None


def _inbound_layer(layer_config):
    """Name of the layer feeding `layer_config` (its single input), or None."""
    nodes = layer_config.get("inbound_nodes") or []
    if len(nodes) != 1 or len(nodes[0].get("args", [])) != 1:
        return None
    return _history(nodes[0]["args"][0])


def _inbound_layers(layer_config):
    """Names of the layers feeding a layer called once on a list of tensors, or None."""
    nodes = layer_config.get("inbound_nodes") or []
    if len(nodes) != 1 or len(nodes[0].get("args", [])) != 1:
        return None
    argument = nodes[0]["args"][0]
    if not isinstance(argument, list) or not argument:
        return None
    names = [_history(a) for a in argument]
    return None if any(n is None for n in names) else names


def data_source(layers, name, task_input=None):
    """The layer whose output carries the data that the layer `name` passes on.

    For a single-input layer, its input; for a `SplitTaskBatches`, the joined
    tensor it cuts (not its size references); for a `JoinTaskBatches`, the
    member that leads back to the input layer named `task_input` (None if
    no member does, or `task_input` is None).

    Args:
        layers: `{layer name: layer config}` of a functional model's config.
        name: a layer name.
        task_input: the name of the input layer of the task being followed.

    Returns:
        A layer name, or None where the data does not come from one layer.
    """
    config = layers[name]
    kind = config["class_name"]
    if kind == SPLIT_CLASS:
        members = _inbound_layers(config)
        return None if members is None else members[0]
    if kind == JOIN_CLASS:
        members = _inbound_layers(config) or []
        return next((m for m in members if _reaches(layers, m, task_input)), None)
    return _inbound_layer(config)


def _reaches(layers, name, target):
    """Whether the data path back from the layer `name` reaches the layer `target`."""
    while name is not None and target is not None:
        if name == target:
            return True
        config = layers[name]
        if config["class_name"] == "InputLayer":
            return False
        if config["class_name"] == JOIN_CLASS:
            return any(_reaches(layers, m, target) for m in _inbound_layers(config) or [])
        name = data_source(layers, name)
    return False


def task_inputs(config, tasks):
    """`{task: name of its input layer}` in a model with one input per task, else None.

    The model's input dict is keyed by `input_name(task)` (how every builder
    keys it), so this reads the key, not a layer name.
    """
    inputs = config.get("input_layers")
    if not isinstance(inputs, dict):
        return None
    return {t: inputs[input_name(t)][0] for t in tasks if input_name(t) in inputs}


def task_block_chains(model, skip_classes=("BranchPoint",)):
    """For each task, the layers between the input and its head, in order.

    Walks the functional config (so it works on models reloaded from
    `.keras`) from each output's head back to the input, through
    single-input layers, skipping the classes in `skip_classes`. In a model
    with one input per task it also passes through the `SplitTaskBatches`
    that cut a joined batch (following the joined tensor) and the
    `JoinTaskBatches` that join the tasks' batches (following the member
    that carries the task's own rows), back to the task's input.

    Args:
        model: a functional model whose output is a dict keyed by task.
        skip_classes: class names to pass through without recording.

    Returns:
        `{task: [layer name, ...]}`, input side first, heads excluded.

    Raises:
        ValueError: if the model is not laid out that way.
    """
    config = model.get_config()
    outputs = config.get("output_layers")
    if not isinstance(outputs, dict) or not outputs:
        raise ValueError(
            "Expected a functional model whose outputs are a dict keyed by task name "
            f"(as `BranchedModelBuilder.build` makes). Received outputs: {outputs!r}"
        )
    layers = {layer["name"]: layer for layer in config["layers"]}
    own_inputs = task_inputs(config, list(outputs)) or {}
    passing = (*skip_classes, SPLIT_CLASS, JOIN_CLASS)
    chains = {}
    for task, (head, _, _) in outputs.items():
        own = own_inputs.get(task)
        chain, name = [], _inbound_layer(layers[head])
        while name is not None and layers[name]["class_name"] != "InputLayer":
            if layers[name]["class_name"] not in passing:
                chain.append(name)
            name = data_source(layers, name, own)
        if name is None or (own is not None and name != own):
            raise ValueError(
                f"The output of task {task!r} does not come from a chain of "
                "single-input layers back to the model's input; this model was not "
                "built from a branching tree."
            )
        chains[task] = chain[::-1]
    return chains
