"""From a trained routed network to its static model; one task of a static model."""

import keras

from keras_branching import naming
from keras_branching.allocation.search import read_allocation
from keras_branching.layers.joint_components import JointComponents


def export_allocation_network(builder, model):
    """The static model of a trained routed network, with its trained weights.

    Each task runs only the components its greedy allocation selects: the
    trained layers are reused (so are their weights), the masks are gone and
    components no task uses are left out. The result is a plain functional
    `keras.Model` (inputs and outputs in dicts keyed by task) whose outputs
    equal `model`'s at inference. The structure is read from the model's
    layers and config, so a routed network reloaded from `.keras` works too.

    Args:
        builder: the `AllocationBuilder` the network was built from.
        model: the routed network (`LearnedAllocation.model`).

    Returns:
        A `keras.Model`, not compiled.

    Raises:
        ValueError: if `model` is not a routed network of `builder`.

    Example:

    >>> import keras
    >>> from keras_branching import Task
    >>> from keras_branching.allocation import AllocationBuilder, build_routed_network
    >>> builder = AllocationBuilder((3,), [[keras.layers.Identity] * 2],
    ...     [Task(t, head=lambda: keras.layers.Dense(1), loss="mse") for t in "ab"])
    >>> static = export_allocation_network(builder, build_routed_network(builder))
    >>> sorted(static.output)
    ['a', 'b']
    """
    allocation = read_allocation(model, builder.task_names)
    joints = [layer for layer in model.layers if isinstance(layer, JointComponents)]
    if len(joints) != len(builder.layers):
        raise ValueError(
            f"Expected a routed network of this builder, with {len(builder.layers)} "
            f"`JointComponents` layers. Received {model.name!r} with {len(joints)}"
        )
    outputs = model.get_config()["output_layers"]
    heads = {t: model.get_layer(outputs[t][0]) for t in builder.task_names}

    def get_layer(index, component, task):
        return joints[index].components[0 if component is None else component]

    return builder.static_graph(allocation, get_layer, heads, "allocated_network")


def task_model(model, task):
    """The part of a static multi-task model that computes one task.

    In a static model (from `AllocationBuilder.build` or
    `export_allocation_network`) each task's output depends only on its own
    input, so a task can be evaluated alone, without feeding the other
    tasks. The routed network runs all tasks' batches through each layer
    together: call it on every task's input.

    Args:
        model: a static model with outputs in a dict keyed by task, and
            one input or per-task inputs (keyed by `builder.input_names`).
        task: a task name.

    Returns:
        A `keras.Model` from that task's input to its output.

    Raises:
        ValueError: for an unknown task, or a network that joins the tasks'
            batches.
    """
    if not isinstance(model.output, dict) or task not in model.output:
        raise ValueError(
            f"Expected a model with a dict output holding task {task!r}. "
            f"Received outputs {model.output!r}"
        )
    if not isinstance(model.input, dict):
        inputs = model.input
    elif naming.input_name(task) in model.input:
        inputs = model.input[naming.input_name(task)]
    else:
        raise ValueError(
            f"Expected a model with a dict input holding task {task!r}. "
            f"Received inputs {model.input!r}"
        )
    if any(isinstance(layer, JointComponents) for layer in model.layers):
        raise ValueError(
            "Expected a static model (from `AllocationBuilder.build` or "
            f"`export_allocation_network`), whose tasks can run alone. Received {model.name!r}, "
            "which runs all tasks' batches through each layer together: call it on every "
            "task's input instead"
        )
    return keras.Model(inputs, model.output[task], name=naming.task_model_name(task))
