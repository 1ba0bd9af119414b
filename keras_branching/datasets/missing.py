"""`mask_missing`: train on examples that lack some of their task labels."""

import math
import numbers

import numpy as np


def _check_missing_value(missing_value):
    if isinstance(missing_value, dict):
        for value in missing_value.values():
            _check_missing_value(value)
        return missing_value
    if missing_value is not None and (
        isinstance(missing_value, bool) or not isinstance(missing_value, numbers.Real)
    ):
        raise TypeError(
            "Expected `missing_value` to be None (NaN marks a missing label), a number, "
            f"or a dict of those per task. Received: missing_value={missing_value!r}"
        )
    if missing_value is not None and math.isnan(missing_value):
        raise ValueError(
            "Expected `missing_value` to be None to mark NaN labels as missing (NaN never "
            f"equals NaN, so nothing would be masked). Received: missing_value={missing_value!r}"
        )
    return missing_value


def _check_known_tasks(missing_value, tasks):
    """Rejects `missing_value` dict keys that are not task names (a misspelling)."""
    if isinstance(missing_value, dict):
        unknown = [t for t in missing_value if t not in tasks]
        if unknown:
            raise ValueError(
                f"Unknown tasks {unknown} in `missing_value`. Expected keys among "
                f"{list(tasks)}. Received: missing_value={missing_value!r}"
            )


def _missing_value_of(missing_value, task):
    if isinstance(missing_value, dict):
        return missing_value.get(task)
    return missing_value


def _check_fill_value(fill_value):
    if isinstance(fill_value, bool) or not isinstance(fill_value, numbers.Real):
        raise TypeError(
            f"Expected `fill_value` to be a number. Received: fill_value={fill_value!r}"
        )
    if not math.isfinite(fill_value):
        raise ValueError(
            "Expected a finite `fill_value` (a missing label's loss is multiplied by 0, "
            f"but NaN or inf times 0 is NaN). Received: fill_value={fill_value!r}"
        )
    return fill_value


def _numpy_mask(task, labels, missing_value, fill_value):
    labels = np.asarray(labels)
    if labels.ndim == 0:
        raise ValueError(
            f"Expected the labels of task {task!r} to have a batch axis. Received a scalar."
        )
    if missing_value is None:
        if np.issubdtype(labels.dtype, np.floating):
            is_missing = np.isnan(labels)
        else:
            is_missing = np.zeros(labels.shape, bool)
    else:
        is_missing = labels == missing_value
    per_example = is_missing.reshape(len(labels), -1)
    all_missing, any_missing = per_example.all(axis=1), per_example.any(axis=1)
    partial = np.flatnonzero(any_missing & ~all_missing)
    if partial.size:
        raise ValueError(
            f"Task {task!r} has partly missing labels in examples {partial[:5].tolist()}: "
            "a label is missing only when all its entries are. Split the task into one "
            "task per entry to mask entries separately."
        )
    filled = np.where(is_missing, np.asarray(fill_value, labels.dtype), labels)
    return filled, (~all_missing).astype("float32")


def _tf_mask(tf, labels, missing_value, fill_value):
    labels = tf.convert_to_tensor(labels)
    if missing_value is None:
        is_missing = (
            tf.math.is_nan(labels) if labels.dtype.is_floating else tf.zeros_like(labels, tf.bool)
        )
    else:
        is_missing = tf.equal(labels, tf.cast(missing_value, labels.dtype))
    batch = tf.shape(labels)[0]
    per_example = tf.reshape(is_missing, [batch, -1])
    all_missing = tf.reduce_all(per_example, axis=1)
    any_missing = tf.reduce_any(per_example, axis=1)
    check = tf.debugging.assert_equal(
        all_missing,
        any_missing,
        message="partly missing labels: a label is missing only when all its entries are",
    )
    with tf.control_dependencies([check]):
        filled = tf.where(is_missing, tf.cast(fill_value, labels.dtype), labels)
    return filled, tf.cast(tf.logical_not(all_missing), tf.float32)


def _combine_weights(weights, sample_weight, tasks, multiply):
    if sample_weight is None:
        return weights
    if isinstance(sample_weight, dict):
        unknown = sorted(set(sample_weight) - set(tasks))
        if unknown:
            raise ValueError(
                f"Unknown tasks {unknown} in `sample_weight`. Expected keys among {tasks}."
            )
        return {
            t: multiply(w, sample_weight[t]) if t in sample_weight else w
            for t, w in weights.items()
        }
    return {t: multiply(w, sample_weight) for t, w in weights.items()}


def mask_missing(x, y=None, sample_weight=None, missing_value=None, fill_value=0):
    """Marks missing labels so they add no loss, no gradient and no metric update.

    Multi-task data is often partly labelled. Give a missing label as NaN
    (or as `missing_value`, e.g. -1 for integer classes); `mask_missing`
    replaces it by `fill_value` and returns per-task sample weights that
    are 0 where the task's label is missing and 1 elsewhere (times any
    `sample_weight` given). Keras multiplies each task's per-example loss by
    its sample weight, so a missing label contributes nothing to the loss
    and no gradient to its task's head, while the example still trains the
    other tasks, and through them the shared blocks.

    Two Keras details matter:

    - metrics count sample weights only when compiled as
      `weighted_metrics`: compile the task metrics as `weighted_metrics`
      so that missing labels do not count in them;
    - a task's loss is divided by the batch size (Keras's default
      `"sum_over_batch_size"`), so a task with few labels in a batch weighs
      less. Give the task a loss with `reduction="mean_with_sample_weight"`
      (e.g. `keras.losses.MeanSquaredError(reduction=...)`) to average over
      its labelled examples instead; an all-missing batch then gives 0.

    A label with several entries (a vector per example) is missing when
    all its entries are; a partly missing label raises (make one task per
    entry instead).

    Two forms:

    - numpy: `mask_missing(x, y)` with `y` a dict of arrays keyed by task
      returns `(x, y, sample_weight)`: train with
      `x, y, w = mask_missing(x, y)` then
      `model.fit(x, y, sample_weight=w)`. Works on every backend.
    - `tf.data`: `mask_missing(dataset)` with a dataset of `(x, y)` or
      `(x, y, sample_weight)` elements (`y` a dict keyed by task) returns
      a dataset of `(x, y, sample_weight)`. TensorFlow is needed to build
      the dataset (as for any `tf.data` pipeline).

    Args:
        x: the inputs (numpy form), or a `tf.data.Dataset`.
        y: dict of label arrays keyed by task (numpy form; `None` with a
            dataset).
        sample_weight: optional weights to combine with the masks: one
            array for every task, or a dict keyed by task (numpy form).
        missing_value: `None` (NaN marks a missing label; integer labels are
            then never missing), a number, or a dict of those per task.
        fill_value: the value written in place of a missing label; a
            finite number that is a valid label for the loss (its loss is
            multiplied by 0, but NaN times 0 is still NaN).

    Returns:
        `(x, y, sample_weight)` for numpy data, or a `tf.data.Dataset` of
        such elements.

    Raises:
        TypeError: if `y` is not a dict, or for arguments of the wrong type.
        ValueError: if a label is partly missing, lengths differ, a
            `missing_value` or `sample_weight` dict names a task `y` does not
            have, `fill_value` is NaN or inf, or `missing_value` is NaN (use
            None for NaN).

    Example:

    >>> import numpy as np
    >>> x = np.zeros((3, 2), "float32")
    >>> y = {"age": np.array([[30.0], [np.nan], [50.0]]), "income": np.array([[0], [1], [-1]])}
    >>> x, y, w = mask_missing(x, y, missing_value={"income": -1})
    >>> w["age"].tolist(), w["income"].tolist()
    ([1.0, 0.0, 1.0], [1.0, 1.0, 0.0])
    >>> y["age"][:, 0].tolist()
    [30.0, 0.0, 50.0]
    """
    missing_value = _check_missing_value(missing_value)
    fill_value = _check_fill_value(fill_value)
    if type(x).__module__.startswith("tensorflow") and hasattr(x, "element_spec"):
        if y is not None or sample_weight is not None:
            raise ValueError(
                "With a `tf.data.Dataset`, pass the labels (and sample weights) inside "
                "the dataset's elements. Received: y or sample_weight as well."
            )
        return _mask_dataset(x, missing_value, fill_value)
    if not isinstance(y, dict):
        raise TypeError(
            "Expected `y` to be a dict of label arrays keyed by task name. "
            f"Received: y of type {type(y).__name__}"
        )
    _check_known_tasks(missing_value, list(y))
    lengths = {t: len(np.asarray(v)) for t, v in y.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"Expected every task's labels to have the same length. Got {lengths}")
    filled, weights = {}, {}
    for task, labels in y.items():
        filled[task], weights[task] = _numpy_mask(
            task, labels, _missing_value_of(missing_value, task), fill_value
        )

    def multiply(w, other):
        return (w * np.asarray(other, "float32").reshape(len(w))).astype("float32")

    return x, filled, _combine_weights(weights, sample_weight, list(y), multiply)


def _mask_dataset(dataset, missing_value, fill_value):
    import tensorflow as tf

    spec = dataset.element_spec
    if isinstance(spec, tuple) and len(spec) in (2, 3) and isinstance(spec[1], dict):
        _check_known_tasks(missing_value, list(spec[1]))

    def mask(*element):
        if len(element) not in (2, 3) or not isinstance(element[1], dict):
            raise ValueError(
                "Expected dataset elements `(x, y)` or `(x, y, sample_weight)` with `y` a "
                f"dict keyed by task name. Received an element with {len(element)} parts."
            )
        x, y = element[0], element[1]
        filled, weights = {}, {}
        for task, labels in y.items():
            filled[task], weights[task] = _tf_mask(
                tf, labels, _missing_value_of(missing_value, task), fill_value
            )
        sample_weight = element[2] if len(element) == 3 else None

        def multiply(w, other):
            return w * tf.reshape(tf.cast(other, tf.float32), tf.shape(w))

        return x, filled, _combine_weights(weights, sample_weight, list(y), multiply)

    return dataset.map(mask)
