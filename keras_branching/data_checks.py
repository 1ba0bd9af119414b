"""Checks on training data, run before any training starts.

Every search (`Search.search`) and every model a builder makes
(`TaskModel.fit`) calls these first, so bad data stops with a message
that names the problem instead of coming back as a plausible plan.
"""


class DataError(ValueError):
    """Training data that cannot be trained on: wrong keys, lengths or values."""


def _length(value):
    shape = getattr(value, "shape", None)
    if shape is not None and len(shape) > 0:
        return shape[0]
    return len(value)


def check_arrays(x, y, task_names):
    """Checks in-memory `x` and `y` (a dict keyed by task) before training.

    Args:
        x: an array, or a dict of arrays keyed by input name.
        y: a dict of arrays keyed by task name.
        task_names: the model's task names.

    Raises:
        DataError: if `y`'s keys are not exactly the task names, or if `x`
            and the targets differ in length.

    Example:

    >>> import numpy as np
    >>> check_arrays(np.zeros((4, 2)), {"a": np.zeros((4, 1))}, ["a"])
    """
    if not isinstance(y, dict):
        raise DataError(
            f"Expected `y` to be a dict keyed by task name {list(task_names)}. "
            f"Received: y of type {type(y).__name__}"
        )
    missing = [t for t in task_names if t not in y]
    unknown = [k for k in y if k not in task_names]
    if missing or unknown:
        raise DataError(
            f"Expected `y` keyed by exactly the task names {list(task_names)}. "
            f"Missing: {missing}; unknown: {unknown}"
        )
    lengths = (
        {"x": _length(x)}
        if not isinstance(x, dict)
        else {f"x[{k!r}]": _length(v) for k, v in x.items()}
    )
    lengths.update({f"y[{k!r}]": _length(v) for k, v in y.items()})
    if len(set(lengths.values())) > 1:
        raise DataError(
            f"Expected `x` and every `y` of the same length. Received lengths: {lengths}"
        )
    for name, value in lengths.items():
        if value == 0:
            raise DataError(f"Expected at least one example. Received: {name} with 0 examples")
