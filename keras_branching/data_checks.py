"""Checks on training data, run before any training starts.

Every search (`Search.search`), every model a builder makes
(`TaskModel.fit`) and `WeightedModel.fit` call `check_data` first, so bad
data stops with a `DataError` that names the task, key and examples at
fault instead of coming back as a plausible plan or a NaN model.

What is checked:

- in-memory data (numpy arrays, backend tensors, lists; `x` may be a dict
  or list of such, e.g. per-task inputs): `y` is a dict keyed by exactly
  the task names; `x`, every `y` and the sample weights have one length;
  there is at least one example (or `min_examples`); every floating point
  value of `x`, `y` and the sample weights is finite;
- a `tf.data.Dataset`: its elements are `(x, y)` or `(x, y, sample_weight)`
  with `y` a dict keyed by exactly the task names (read from
  `element_spec`, without iterating), and its *first batch* has one length
  and finite values. Later batches are not read: that would cost a pass
  over the data;
- `validation_data`, the same way.

Missing labels must be marked with `keras_branching.datasets.mask_missing`
(it writes a finite value in their place and gives them sample weight 0),
so a NaN label is an error here. Other inputs (`keras.utils.PyDataset`,
Python generators, torch data loaders) are not checked.
"""

import difflib
import inspect

import keras
import numpy as np


class DataError(ValueError):
    """Training data that cannot be trained on: wrong keys, lengths or values.

    Example:

    >>> issubclass(DataError, ValueError)
    True
    """


_MASK_HINT = (
    "Mark missing labels with `keras_branching.datasets.mask_missing` (it fills them "
    "with a finite value and gives them sample weight 0); remove or impute non-finite "
    "inputs."
)


def is_dataset(value):
    """Whether `value` is a `tf.data.Dataset` (without importing TensorFlow).

    Example:

    >>> import numpy as np
    >>> is_dataset(np.zeros(3))
    False
    """
    return type(value).__module__.startswith("tensorflow") and hasattr(value, "element_spec")


def _is_array(value):
    return isinstance(value, (np.ndarray, np.generic)) or (
        hasattr(value, "shape") and hasattr(value, "dtype") and not is_dataset(value)
    )


def _is_in_memory(value):
    """Arrays, tensors, lists of numbers, or dicts/lists/tuples of those."""
    if value is None:
        return False
    if _is_array(value):
        return True
    if isinstance(value, dict):
        return bool(value) and all(_is_in_memory(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_is_in_memory(v) or isinstance(v, (int, float, bool, np.number)) for v in value)
    return False


def _leaves(value, label):
    """`(label, value)` for every array of a nested dict/list/tuple of arrays.

    A list or tuple of arrays is several inputs (as `fit` reads it); a list
    of numbers (or of lists of numbers) is one array.
    """
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{label}[{key!r}]")
    elif (
        isinstance(value, (list, tuple))
        and value
        and all(_is_array(v) or isinstance(v, dict) for v in value)
    ):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{label}[{i}]")
    else:
        yield label, value


def _length(value):
    shape = getattr(value, "shape", None)
    if shape is not None:
        return int(shape[0]) if len(shape) > 0 and shape[0] is not None else None
    return len(value)


def _as_numpy(value):
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except Exception:  # e.g. a tensor on an accelerator numpy cannot read
        return np.asarray(keras.ops.convert_to_numpy(value))


def _nonfinite_examples(value):
    """The indices of the examples (first axis) holding NaN or inf, and what was found.

    Two reductions (min and max propagate NaN and show inf) decide; only
    when one is not finite is a mask built to locate the examples.
    """
    array = _as_numpy(value)
    if array.dtype.kind not in "fc" or array.size == 0:
        return None
    if np.isfinite(np.min(array)) and np.isfinite(np.max(array)):
        return None
    flat = array.reshape(len(array), -1) if array.ndim else array.reshape(1, 1)
    bad = np.flatnonzero(~np.isfinite(flat).all(axis=1))
    kinds = []
    if np.isnan(flat).any():
        kinds.append("NaN")
    if np.isinf(flat).any():
        kinds.append("inf")
    return bad, " and ".join(kinds)


def _check_finite(leaves):
    for label, value in leaves:
        found = _nonfinite_examples(value)
        if found is not None:
            bad, kinds = found
            shown = bad[:5].tolist()
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise DataError(
                f"Expected finite values in {label}. Received {kinds} in {len(bad)} "
                f"example(s), at indices {shown}{more}. {_MASK_HINT}"
            )


def _check_keys(y, task_names, label):
    task_names = list(task_names)
    if not isinstance(y, dict):
        raise DataError(
            f"Expected {label} to be a dict keyed by task name {task_names}. "
            f"Received: {label} of type {type(y).__name__}"
        )
    missing = [t for t in task_names if t not in y or y[t] is None]
    unknown = [k for k in y if k not in task_names]
    if missing or unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), missing, n=1)
            if close:
                hints.append(f"{key!r} for {close[0]!r}")
        hint = f" (misspelt? {', '.join(hints)})" if hints else ""
        raise DataError(
            f"Expected {label} keyed by exactly the task names {task_names}. "
            f"Missing: {missing}; unknown: {unknown}{hint}"
        )


def _check_sample_weight_keys(sample_weight, task_names, label):
    if isinstance(sample_weight, dict):
        unknown = [k for k in sample_weight if k not in list(task_names)]
        if unknown:
            raise DataError(
                f"Expected {label} keyed by task names among {list(task_names)}. "
                f"Received unknown keys {unknown}"
            )


def _check_lengths(leaves, min_examples, who, batch=False):
    lengths = {label: _length(value) for label, value in leaves}
    lengths = {k: v for k, v in lengths.items() if v is not None}
    if len(set(lengths.values())) > 1:
        where = "of the first batch " if batch else ""
        hint = " Is the dataset batched?" if batch else ""
        raise DataError(
            f"Expected `x`, every `y` and the sample weights {where}to have the same "
            f"length (number of examples). Received lengths: "
            f"{', '.join(f'{k}: {v}' for k, v in lengths.items())}.{hint}"
        )
    for label, value in lengths.items():
        if value < min_examples:
            needs = f"{who} needs" if who else "Expected"
            raise DataError(
                f"{needs} at least {min_examples} example(s). Received: {label} with "
                f"{value} example(s)"
            )


def check_arrays(x, y, task_names, sample_weight=None, min_examples=1, what="", who=None):
    """Checks in-memory `x` and `y` (a dict keyed by task) before training.

    Args:
        x: an array, or a dict (per-task or named inputs) or list of arrays.
        y: a dict of arrays keyed by task name.
        task_names: the model's task names.
        sample_weight: optional array, or dict of arrays keyed by task.
        min_examples: the fewest examples accepted (default 1).
        what: a prefix for the names in messages (e.g. `"validation_data "`).
        who: who needs `min_examples` (a class name), for the message.

    Raises:
        DataError: if `y`'s keys are not exactly the task names (the message
            lists missing and unknown keys), if `x`, the targets and the
            sample weights differ in length, if there are fewer than
            `min_examples` examples, or if a value is NaN or inf.

    Example:

    >>> import numpy as np
    >>> check_arrays(np.zeros((4, 2)), {"a": np.zeros((4, 1))}, ["a"])
    >>> check_arrays(np.zeros((4, 2)), {"a": np.full((4, 1), np.nan)}, ["a"])
    Traceback (most recent call last):
    ...
    keras_branching.data_checks.DataError: Expected finite values in y['a']. Received NaN ...
    """
    _check_keys(y, task_names, f"`{what}y`")
    _check_sample_weight_keys(sample_weight, task_names, f"`{what}sample_weight`")
    leaves = list(_leaves(x, f"{what}x"))
    leaves += [(f"{what}y[{t!r}]", y[t]) for t in y]
    if sample_weight is not None:
        leaves += list(_leaves(sample_weight, f"{what}sample_weight"))
    _check_lengths(leaves, min_examples, who)
    _check_finite(leaves)


def check_dataset(dataset, task_names, what=""):
    """Checks a `tf.data.Dataset` of `(x, y)` or `(x, y, sample_weight)` batches.

    The structure (`y` keyed by exactly the task names) is read from
    `element_spec`; lengths and finite values are checked on the first
    batch only (one batch is read from a fresh iterator).

    Args:
        dataset: the dataset.
        task_names: the model's task names.
        what: a prefix for the names in messages.

    Raises:
        DataError: for elements that are not `(x, y[, sample_weight])` with
            `y` keyed by the task names, an empty dataset, or a first batch
            with lengths that differ or values that are not finite.
    """
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) not in (2, 3):
        raise DataError(
            f"Expected {what or 'the '}dataset's elements to be `(x, y)` or `(x, y, "
            f"sample_weight)` with `y` a dict keyed by task name {list(task_names)}. "
            f"Received elements of spec {spec!r}"
        )
    _check_keys(spec[1], task_names, f"`{what}y` (the dataset's targets)")
    if len(spec) == 3 and spec[2] is not None:
        _check_sample_weight_keys(spec[2], task_names, f"`{what}sample_weight`")
    first = None
    for element in dataset.take(1):
        first = element
    if first is None:
        raise DataError(
            f"Expected at least 1 example. Received: {what or 'a '}dataset that yields no batches"
        )
    first = keras.tree.map_structure(lambda t: np.asarray(t), first)
    leaves = list(_leaves(first[0], f"{what}x"))
    leaves += [(f"{what}y[{t!r}]", first[1][t]) for t in first[1]]
    if len(first) == 3 and first[2] is not None:
        leaves += list(_leaves(first[2], f"{what}sample_weight"))
    labelled = [(f"{label} (first batch)", value) for label, value in leaves]
    batched = [(label, v) for label, v in labelled if np.ndim(v) > 0]
    _check_lengths(batched, 1, None, batch=True)
    _check_finite(labelled)


def check_data(
    x,
    y,
    task_names,
    sample_weight=None,
    validation_data=None,
    min_examples=1,
    who=None,
):
    """Checks training (and validation) data the way `fit` would receive it.

    Dispatches to `check_dataset` for a `tf.data.Dataset` and to
    `check_arrays` for in-memory data; other kinds (`PyDataset`,
    generators) pass unchecked.

    Args:
        x: the inputs, or a dataset.
        y: the targets, a dict keyed by task name (None with a dataset).
        task_names: the model's task names.
        sample_weight: optional sample weights (in-memory data).
        validation_data: optional `(x, y)`, `(x, y, sample_weight)` or a
            dataset.
        min_examples: the fewest training examples accepted.
        who: who needs `min_examples` (for the message).

    Raises:
        DataError: see `check_arrays` and `check_dataset`; also for
            in-memory `x` without `y`, or a dataset with `y` given.

    Example:

    >>> import numpy as np
    >>> check_data(np.zeros((4, 2)), {"a": np.zeros((4, 1))}, ["a"],
    ...            validation_data=(np.zeros((2, 2)), {"b": np.zeros((2, 1))}))
    Traceback (most recent call last):
    ...
    keras_branching.data_checks.DataError: Expected `validation_data y` keyed by exactly ...
    """
    _check_one(x, y, sample_weight, task_names, min_examples, "", who)
    # A dataset's size is not known up front: `min_examples` above 1 applies
    # to in-memory data only (a search reading its own samples checks them).
    if validation_data is None:
        return
    if is_dataset(validation_data):
        check_dataset(validation_data, task_names, what="validation_data ")
        return
    if not isinstance(validation_data, (list, tuple)) or len(validation_data) not in (2, 3):
        raise DataError(
            "Expected `validation_data` to be `(x_val, y_val)`, `(x_val, y_val, "
            "sample_weight)` or a `tf.data.Dataset`. Received: validation_data of type "
            f"{type(validation_data).__name__}"
            + (
                f" with {len(validation_data)} items"
                if isinstance(validation_data, (list, tuple))
                else ""
            )
        )
    x_val, y_val = validation_data[0], validation_data[1]
    weights = validation_data[2] if len(validation_data) == 3 else None
    _check_one(x_val, y_val, weights, task_names, 1, "validation_data ", None)


def _check_one(x, y, sample_weight, task_names, min_examples, what, who):
    if is_dataset(x):
        if y is not None:
            raise DataError(
                f"With a `tf.data.Dataset` as `{what}x`, pass the targets inside its "
                f"elements. Received: `{what}y` as well"
            )
        check_dataset(x, task_names, what=what)
    elif _is_in_memory(x):
        if y is None:
            raise DataError(
                f"Expected `{what}y`, a dict of targets keyed by task name "
                f"{list(task_names)}. Received: y=None with in-memory `{what}x`"
            )
        check_arrays(x, y, task_names, sample_weight, min_examples, what, who)


_FIT_SIGNATURE = inspect.signature(keras.Model.fit)


def check_fit_call(task_names, args, kwargs):
    """Checks the data of a `fit(*args, **kwargs)` call of a multi-task model.

    Used by `TaskModel.fit` and `WeightedModel.fit`. Arguments `fit` would
    reject anyway (unknown keywords) are left for `fit` to report.

    Raises:
        DataError: see `check_data`.
    """
    try:
        bound = _FIT_SIGNATURE.bind(None, *args, **kwargs).arguments
    except TypeError:
        return
    check_data(
        bound.get("x"),
        bound.get("y"),
        task_names,
        sample_weight=bound.get("sample_weight"),
        validation_data=bound.get("validation_data"),
    )
