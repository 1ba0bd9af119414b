"""Features of single-task networks at every branch point."""

import numbers

import keras
import numpy as np

from keras_branching.naming import task_block_chains


def task_blocks(model):
    """Each task's own block copies in a model of the independent tree.

    Walks the functional graph (`keras_branching.naming.task_block_chains`),
    so it reads the structure, not the layer names: it works on a model
    reloaded from `.keras` and whatever the blocks are called.

    Args:
        model: a functional model built by `BranchedModelBuilder` from the
            fully independent tree, with a dict output keyed by task name.

    Returns:
        A dict mapping each task name to its list of block layers, input
        side first.

    Raises:
        TypeError: if `model` is not a Keras model with a dict output.
        ValueError: if the model is not the independent tree (a block copy
            shared by tasks, no blocks, or tasks with different numbers of
            blocks).

    Example:

    >>> import keras
    >>> from keras_branching.builder import BranchedModelBuilder
    >>> from keras_branching.task import Task
    >>> builder = BranchedModelBuilder(
    ...     (4,), [lambda: keras.layers.Dense(3)] * 2,
    ...     [Task(n, lambda: keras.layers.Dense(1), "mse") for n in ("a", "b")],
    ... )
    >>> blocks = task_blocks(builder.build(builder.independent_tree(), fuse=False))
    >>> [len(layers) for layers in blocks.values()]
    [2, 2]
    """
    if not isinstance(model, keras.Model) or not isinstance(model.output, dict):
        raise TypeError(
            "Expected a Keras model built by `BranchedModelBuilder` (with a dict "
            f"output keyed by task name). Received: {model!r}"
        )
    chains = task_block_chains(model)
    depths = {task: len(chain) for task, chain in chains.items()}
    if len(set(depths.values())) != 1 or not next(iter(depths.values())):
        raise ValueError(
            "Expected a model of the independent tree, where every task has its own "
            "copy of every block (at least one). Received block counts per task: "
            f"{depths}"
        )
    owners = {}
    for task, chain in chains.items():
        for name in chain:
            owners.setdefault(name, []).append(task)
    shared = {name: tasks for name, tasks in owners.items() if len(tasks) > 1}
    if shared:
        raise ValueError(
            "Expected a model of the independent tree (one copy of every block per "
            f"task). Received a model whose block copies are shared: {shared}"
        )
    return {task: [model.get_layer(name) for name in chain] for task, chain in chains.items()}


def probe_inputs(inputs, num_samples, seed=None):
    """One probe batch of `num_samples` inputs drawn from every task's own inputs.

    Representation similarity compares two tasks' networks on the *same*
    inputs. Where every task has its own examples (a builder with per-task
    inputs, such as one Omniglot alphabet per task), the probe set is
    pooled: each of the `T` tasks gives `num_samples // T` examples (the
    first `num_samples % T` tasks one more), drawn at random without
    replacement, and the pooled batch is fed to *every* task's network
    (`branch_point_features` does so for a model with per-task inputs).

    Args:
        inputs: a dict keyed by task (or by the model's input names) of
            arrays, each with its own number of examples.
        num_samples: the size of the probe batch, an int >= 1.
        seed: optional int seeding the draw; the same seed gives the same
            batch.

    Returns:
        A numpy array of `num_samples` inputs, task after task in the
        order of `inputs`.

    Raises:
        TypeError: if `inputs` is not a non-empty dict of arrays.
        ValueError: for `num_samples` < 1, or a task with fewer examples
            than its share.

    Example:

    >>> import numpy as np
    >>> inputs = {"a": np.zeros((10, 2)), "b": np.ones((4, 2))}
    >>> probe = probe_inputs(inputs, 5, seed=0)
    >>> probe.shape, probe[:, 0].tolist()
    ((5, 2), [0.0, 0.0, 0.0, 1.0, 1.0])
    """
    if not isinstance(inputs, dict) or not inputs:
        raise TypeError(
            "Expected `inputs` to be a non-empty dict of arrays keyed by task. "
            f"Received: {type(inputs).__name__}"
        )
    if (
        isinstance(num_samples, bool)
        or not isinstance(num_samples, numbers.Integral)
        or num_samples < 1
    ):
        raise ValueError(
            f"Expected `num_samples` to be an int >= 1. Received: num_samples={num_samples!r}"
        )
    rng = np.random.default_rng(seed)
    count = len(inputs)
    parts = []
    for index, (task, values) in enumerate(inputs.items()):
        values = np.asarray(values)
        share = num_samples // count + (index < num_samples % count)
        if len(values) < share:
            raise ValueError(
                f"Expected at least {share} inputs of task {task!r} for a probe batch of "
                f"num_samples={num_samples} pooled from {count} tasks. Received: {len(values)}"
            )
        parts.append(values[np.sort(rng.choice(len(values), size=share, replace=False))])
    return np.concatenate(parts)


def branch_point_features(model, x, pooling=None, batch_size=256):
    """Each task's features at the end of every block, for inputs `x`.

    `model` must come from `BranchedModelBuilder.build(builder.independent_tree())`
    (trained): each task then has its own copy of every block. The copies
    are found by walking the model's graph (`task_blocks`), never by their
    names; their outputs are read in one `predict` of a model from the
    input to all of them.

    Per-task inputs: for a model with one input per task, `x` is one batch
    that is fed to every task's input, so that all tasks are compared on
    the same inputs (pool it from every task's examples with
    `probe_inputs`).

    A fused model (`build(tree, fuse=True)`, as `AffinityBranching` trains
    by default) is read through its separate form
    (`keras_branching.fusion.unfuse`, the same weights).

    Args:
        model: a Keras model built by `BranchedModelBuilder` from the fully
            independent tree (separate or fused), with a dict output keyed
            by task name.
        x: the inputs (K of them), as `model.predict` takes them; for a
            model with per-task inputs, one array fed to every task's input.
        pooling: None to keep the features whole (`rdm` flattens them), or
            "average" to average over every axis between the batch and the
            channel axis (space, for convolutional blocks).
        batch_size: batch size for `predict`.

    Returns:
        A dict mapping each task name to a list of numpy arrays, one per
        block, each of shape `(K, ...)`: the format `rsa_affinity` takes.

    Raises:
        TypeError: if `model` has no dict output keyed by task name.
        ValueError: if the model is not the independent tree (see
            `task_blocks`), for an unknown `pooling`, or for `x` a dict
            when the model has per-task inputs.

    Example:

    >>> import keras, numpy as np
    >>> from keras_branching.builder import BranchedModelBuilder
    >>> from keras_branching.task import Task
    >>> builder = BranchedModelBuilder(
    ...     (4,), [lambda: keras.layers.Dense(3)] * 2,
    ...     [Task(n, lambda: keras.layers.Dense(1), "mse") for n in ("a", "b")],
    ... )
    >>> model = builder.build(builder.independent_tree())
    >>> features = branch_point_features(model, np.ones((5, 4), "float32"))
    >>> [f.shape for f in features["a"]]
    [(5, 3), (5, 3)]
    """
    if pooling not in (None, "average"):
        raise ValueError(
            f"Expected `pooling` to be None or 'average'. Received: pooling={pooling!r}"
        )
    from keras_branching import fusion  # fusion imports the builder, which imports nothing here

    if fusion.is_fused(model):
        model = fusion.unfuse(model)
    blocks = task_blocks(model)
    if isinstance(model.input, dict):  # per-task inputs: the same probe for every task
        if isinstance(x, dict):
            raise ValueError(
                "Expected one batch of probe inputs for a model with per-task inputs (it "
                "is fed to every task's input, so that the tasks are compared on the same "
                "inputs; pool one from every task's examples with `probe_inputs`). "
                f"Received: a dict of inputs keyed by {sorted(x)}"
            )
        x = [x] * len(model.inputs)
    order = [(task, layer) for task, layers in blocks.items() for layer in layers]
    reader = keras.Model(model.inputs, [layer.output for _, layer in order])
    outputs = reader.predict(x, batch_size=batch_size, verbose=0)
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    features = {task: [] for task in blocks}
    for (task, _), value in zip(order, outputs):
        value = np.asarray(value)
        if pooling == "average" and value.ndim > 2:
            value = value.mean(axis=tuple(range(1, value.ndim - 1)))
        features[task].append(value)
    return features
