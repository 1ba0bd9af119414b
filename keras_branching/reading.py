"""Reading the branching tree back from a built model."""

from keras_branching.tree import BranchingTree


def _inbound_layer(layer_config):
    """Name of the layer feeding `layer_config` (its single input), or None."""
    nodes = layer_config.get("inbound_nodes") or []
    if len(nodes) != 1 or len(nodes[0].get("args", [])) != 1:
        return None
    arg = nodes[0]["args"][0]
    if not isinstance(arg, dict) or arg.get("class_name") != "__keras_tensor__":
        return None
    return arg["config"]["keras_history"][0]


def read_tree(model):
    """The `BranchingTree` of a model built by `BranchedModelBuilder.build`.

    Reads the model's functional config (so it works on a model reloaded
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
    >>> from keras_branching import BranchedModelBuilder, Task
    >>> builder = BranchedModelBuilder(
    ...     (4,),
    ...     [lambda: keras.layers.Dense(3)] * 2,
    ...     [Task(t, head=lambda: keras.layers.Dense(1), loss="mse") for t in "ab"],
    ... )
    >>> tree = BranchingTree(["a", "b"], [[["a", "b"]], [["a"], ["b"]]])
    >>> read_tree(builder.build(tree)) == tree
    True
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
            if layers[name]["class_name"] != "BranchPoint":
                chain.append(name)
            name = _inbound_layer(layers[name])
        if name is None:
            raise ValueError(
                f"The output of task {task!r} does not come from a chain of "
                "single-input layers back to the model's input; this model was not "
                "built from a branching tree."
            )
        chains[task] = chain[::-1]
    depths = {task: len(chain) for task, chain in chains.items()}
    if len(set(depths.values())) != 1 or not next(iter(depths.values())):
        raise ValueError(
            "Expected every task to pass through the same number of blocks (at least "
            f"one). Received block counts per task: {depths}"
        )
    tasks = list(outputs)
    partitions = []
    for block in range(depths[tasks[0]]):
        groups = {}
        for task in tasks:
            groups.setdefault(chains[task][block], []).append(task)
        partitions.append(list(groups.values()))
    return BranchingTree(tasks, partitions)
