"""`task_batches`: one batch of every task per training step (tf.data only)."""


def task_batches(datasets, batch_size, shuffle=True, seed=None, repeat=True):
    """Zips per-task datasets so that each step carries one batch per task.

    For tasks with their own examples (for example one Omniglot alphabet per
    task), as learned parameter allocation trains: every step holds one
    batch of each task. It feeds the models of every builder made with
    per-task inputs (`inputs` a dict of shapes: `BranchedModelBuilder`,
    `build_supernet`, `RoutingModelBuilder`, `AllocationBuilder`), whose
    input keys are the task names. Without `repeat`, the last batches of
    tasks of different sizes differ in size; those models take that. This
    helper works on `tf.data` only (it imports TensorFlow when called); the
    resulting dataset feeds `fit` on every backend (pass `shuffle=False` to
    `fit`, which cannot shuffle a dataset).

    Args:
        datasets: dict keyed by task of unbatched `tf.data.Dataset`s of
            `(x, y)` pairs.
        batch_size: batch size of every task (paper: 16), an int >= 1.
        shuffle: whether to shuffle each task's data.
        seed: shuffle seed (task `i` uses `seed + i`).
        repeat: whether to repeat each dataset forever (training; then
            incomplete batches are dropped and `fit` needs `steps_per_epoch`).

    Returns:
        A `tf.data.Dataset` of `({task: x}, {task: y})` batches.

    Raises:
        TypeError: if `datasets` is not a non-empty dict.
        ValueError: if `batch_size` is not an int >= 1.

    Example:

    >>> import tensorflow as tf
    >>> data = {t: tf.data.Dataset.from_tensor_slices(([[1.0]] * 5, [0.0] * 5)) for t in "ab"}
    >>> x, y = next(iter(task_batches(data, 2, shuffle=False)))
    >>> sorted(x), tuple(x["a"].shape)
    (['a', 'b'], (2, 1))
    """
    if not isinstance(datasets, dict) or not datasets:
        raise TypeError(
            f"Expected `datasets` to be a non-empty dict keyed by task. Received: {datasets!r}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"Expected `batch_size` >= 1. Received: batch_size={batch_size!r}")
    import tensorflow as tf

    batched = {}
    for i, (name, dataset) in enumerate(datasets.items()):
        if shuffle:
            dataset = dataset.shuffle(
                10_000, seed=None if seed is None else seed + i, reshuffle_each_iteration=True
            )
        if repeat:
            dataset = dataset.repeat()
        batched[name] = dataset.batch(batch_size, drop_remainder=repeat)
    names = list(datasets)
    zipped = tf.data.Dataset.zip(batched)
    return zipped.map(
        lambda b: ({t: b[t][0] for t in names}, {t: b[t][1] for t in names})
    ).prefetch(tf.data.AUTOTUNE)
