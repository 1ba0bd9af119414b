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
    if len(group) == num_tasks and num_tasks > 1:
        return f"block{block + 1}_shared"
    names = [sanitize(t) for t in group]
    if len(names) > _MAX_NAME_TASKS:
        names = names[:_MAX_NAME_TASKS] + [f"{len(group) - _MAX_NAME_TASKS}more"]
    return f"block{block + 1}_" + "-".join(names)


def head_name(task):
    """The head of `task`."""
    return f"head_{sanitize(task)}"


def split_name(source):
    """The `BranchPoint` that splits the output of the layer named `source`."""
    return f"split_after_{source}"


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


def supernet_route_name(what):
    """The searchable route of the routing supernet into `what` (an expert or tower label)."""
    return f"route_{what}"


# Inputs.

SHARED_INPUT = "inputs"


def input_name(task):
    """The input of `task` in a model with one input per task."""
    return sanitize(task)


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


def _inbound_layer(layer_config):
    """Name of the layer feeding `layer_config` (its single input), or None."""
    nodes = layer_config.get("inbound_nodes") or []
    if len(nodes) != 1 or len(nodes[0].get("args", [])) != 1:
        return None
    arg = nodes[0]["args"][0]
    if not isinstance(arg, dict) or arg.get("class_name") != "__keras_tensor__":
        return None
    return arg["config"]["keras_history"][0]


def task_block_chains(model, skip_classes=("BranchPoint",)):
    """For each task, the layers between the input and its head, in order.

    Walks the functional config (so it works on models reloaded from
    `.keras`) from each output's head back to the input, through
    single-input layers, skipping the classes in `skip_classes`.

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
    chains = {}
    for task, (head, _, _) in outputs.items():
        chain, name = [], _inbound_layer(layers[head])
        while name is not None and layers[name]["class_name"] != "InputLayer":
            if layers[name]["class_name"] not in skip_classes:
                chain.append(name)
            name = _inbound_layer(layers[name])
        if name is None:
            raise ValueError(
                f"The output of task {task!r} does not come from a chain of "
                "single-input layers back to the model's input; this model was not "
                "built from a branching tree."
            )
        chains[task] = chain[::-1]
    return chains
