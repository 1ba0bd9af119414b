"""Features of single-task networks at every branch point."""

import re

import numpy as np

from keras_branching._validation import sanitize_name

_BLOCK_NAME = re.compile(r"^block(\d+)_(.+)$")


def branch_point_features(model, x, pooling=None, batch_size=256):
    """Each task's features at the end of every block, for inputs `x`.

    `model` must come from `BranchedModelBuilder.build(builder.independent_tree())`
    (trained): each task then has its own copy of every block, named
    `block{d}_{task}` by the builder. The features are the outputs of those
    copies, read in one `predict` of a model from the input to all of them.

    Args:
        model: a Keras model built by `BranchedModelBuilder` from the fully
            independent tree, with a dict output keyed by task name.
        x: the inputs (K of them), as `model.predict` takes them.
        pooling: None to keep the features whole (`rdm` flattens them), or
            "average" to average over every axis between the batch and the
            channel axis (space, for convolutional blocks).
        batch_size: batch size for `predict`.

    Returns:
        A dict mapping each task name to a list of numpy arrays, one per
        block, each of shape `(K, ...)`: the format `rsa_affinity` takes.

    Raises:
        TypeError: if `model` has no dict output keyed by task name.
        ValueError: if the model's block copies do not form the independent
            tree (a block shared by tasks, or a missing copy), or for an
            unknown `pooling`.

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
    import keras

    if pooling not in (None, "average"):
        raise ValueError(
            f"Expected `pooling` to be None or 'average'. Received: pooling={pooling!r}"
        )
    if not isinstance(model, keras.Model) or not isinstance(model.output, dict):
        raise TypeError(
            "Expected a Keras model built by `BranchedModelBuilder` (with a dict "
            f"output keyed by task name). Received: {model!r}"
        )
    tasks = list(model.output)
    suffixes = {sanitize_name(t): t for t in tasks}
    if len(suffixes) != len(tasks):
        raise ValueError(
            f"Task names {tasks} collide once sanitised for layer names; cannot tell "
            "their block copies apart."
        )
    copies = {}
    for layer in model.layers:
        match = _BLOCK_NAME.match(layer.name)
        if match is None:
            continue
        block, suffix = int(match.group(1)), match.group(2)
        if suffix not in suffixes:
            raise ValueError(
                f"Expected a model of the independent tree (one copy of every block "
                f"per task). Received a model with the block copy {layer.name!r}, "
                f"which is not owned by one of the tasks {tasks}."
            )
        copies[(block, suffixes[suffix])] = layer
    num_blocks = max((block for block, _ in copies), default=0)
    missing = [
        f"block{block}_{sanitize_name(t)}"
        for block in range(1, num_blocks + 1)
        for t in tasks
        if (block, t) not in copies
    ]
    if num_blocks == 0 or missing:
        raise ValueError(
            "Expected a model built by `BranchedModelBuilder` from the independent "
            f"tree (layers `block<d>_<task>`). Missing: {missing or 'every block copy'}"
        )
    order = [(block, t) for t in tasks for block in range(1, num_blocks + 1)]
    reader = keras.Model(model.inputs, [copies[key].output for key in order])
    outputs = reader.predict(x, batch_size=batch_size, verbose=0)
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    features = {t: [] for t in tasks}
    for (_, task), value in zip(order, outputs):
        value = np.asarray(value)
        if pooling == "average" and value.ndim > 2:
            value = value.mean(axis=tuple(range(1, value.ndim - 1)))
        features[task].append(value)
    return features
