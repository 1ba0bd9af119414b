"""`Task`: one prediction target of a multi-task model."""

import re

import keras

from keras_branching import naming
from keras_branching._validation import check_non_negative

NAME_RULE = (
    "an ASCII letter, then ASCII letters, digits, `_`, `-` or `.` "
    "(names Keras and TensorFlow accept in scopes, metric names and SavedModel "
    "signatures)"
)
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
# Metric names `compile` resolves itself from the loss, not `keras.metrics.get`.
_COMPILE_METRICS = ("accuracy", "acc", "crossentropy", "ce")


def check_task_name(name):
    """`name` if it is a task name Keras can use everywhere; else an error with the rule.

    The rule: an ASCII letter, then ASCII letters, digits, `_`, `-` or `.`.
    Such a name works unchanged as an output key, layer and metric name,
    TensorFlow scope and SavedModel signature key, on every backend.

    Raises:
        TypeError: if `name` is not a non-empty string.
        ValueError: if it breaks the rule.

    Example:

    >>> check_task_name("Anglo-Saxon_Futhorc")
    'Anglo-Saxon_Futhorc'
    >>> check_task_name("a b")
    Traceback (most recent call last):
    ...
    ValueError: Expected a task name of an ASCII letter, then ...
    """
    if not isinstance(name, str) or not name:
        raise TypeError(
            f"Expected `name` to be a non-empty string. Received: name={name!r} "
            f"(of type {type(name).__name__})"
        )
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"Expected a task name of {NAME_RULE}. Received: name={name!r}. "
            "`keras_branching._validation.sanitize_name` maps other characters to `_`."
        )
    return name


def _resolve(kind, getter, value, task):
    """Checks that `getter` (`keras.losses.get`, `keras.metrics.get`) knows `value`."""
    try:
        resolved = getter(value)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"Expected a {kind} Keras knows (a name, a function or an object) for task "
            f"{task!r}. Received: {value!r} ({error})"
        ) from None
    if resolved is None:
        raise ValueError(f"Expected a {kind} for task {task!r}. Received: {value!r}")
    return resolved


class Task:
    """One task of a multi-task model: its name, head, loss and metrics.

    Args:
        name: the task's name; also the key of its output and target. It
            must start with an ASCII letter and hold only ASCII letters,
            digits, `_`, `-` and `.` (see `check_task_name`).
        head: a zero-argument callable returning a fresh Keras layer (or
            model) that maps the last block's output to the task's
            prediction. It is called once per built model, so each model
            gets its own head weights.
        loss: any loss `keras.Model.compile` accepts (a name, a function or
            a `keras.losses.Loss`); checked with `keras.losses.get` here,
            and kept as given for `compile`.
        metrics: optional list of metrics for this task (names, functions or
            `keras.metrics.Metric`s; checked with `keras.metrics.get`).
        loss_weight: the task's weight in the total loss (a finite number
            >= 0).

    Raises:
        TypeError: for a name that is not a string, a `head` that is not
            callable, or `metrics` that is not a list.
        ValueError: for a name that breaks the rule (the message states
            it), a loss or metric Keras does not know (naming the task), or
            a `loss_weight` that is negative, NaN or infinite.

    Example:

    >>> import keras
    >>> task = Task("age", head=lambda: keras.layers.Dense(1), loss="mse")
    >>> task.name
    'age'
    """

    def __init__(self, name, head, loss, metrics=None, loss_weight=1.0):
        name = check_task_name(name)
        if not callable(head):
            raise TypeError(
                "Expected `head` to be a zero-argument callable that returns a "
                f"fresh Keras layer. Received: head={head!r} for task {name!r}"
            )
        if loss is None:
            raise ValueError(f"Expected a `loss` for task {name!r}. Received: loss=None")
        _resolve("loss", keras.losses.get, loss, name)
        if metrics is not None and not isinstance(metrics, (list, tuple)):
            raise TypeError(
                "Expected `metrics` to be a list or None. "
                f"Received: metrics={metrics!r} for task {name!r}"
            )
        for metric in metrics or []:
            if isinstance(metric, str) and metric.lower() in _COMPILE_METRICS:
                continue
            _resolve("metric", keras.metrics.get, metric, name)
        loss_weight = check_non_negative("loss_weight", loss_weight, f" for task {name!r}")
        self.name = name
        self.head = head
        self.loss = loss
        self.metrics = list(metrics) if metrics is not None else None
        self.loss_weight = float(loss_weight)

    def __repr__(self):
        return (
            f"Task(name={self.name!r}, loss={self.loss!r}, "
            f"metrics={self.metrics!r}, loss_weight={self.loss_weight})"
        )

    def make_head(self):
        """A fresh head layer, named `naming.head_name(name)`.

        Raises:
            TypeError: if `head` does not return a Keras layer.
        """
        head = self.head()
        if not isinstance(head, keras.layers.Layer):
            raise TypeError(
                f"Expected the head of task {self.name!r} to return a Keras layer "
                f"or model. Received: {head!r} (of type {type(head).__name__})"
            )
        head.name = naming.head_name(self.name)
        return head


def check_tasks(tasks):
    """`tasks` as a list if it is a non-empty list of `Task` with unique names."""
    if isinstance(tasks, Task) or not isinstance(tasks, (list, tuple)):
        raise TypeError(f"Expected `tasks` to be a list of `Task`. Received: {tasks!r}")
    if not tasks:
        raise ValueError(f"Expected at least one task. Received: tasks={tasks!r}")
    for i, task in enumerate(tasks):
        if not isinstance(task, Task):
            raise TypeError(
                "Expected each task to be a `keras_branching.Task`. "
                f"Received: tasks[{i}]={task!r} (of type {type(task).__name__})"
            )
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"Expected unique task names. Received: {names}")
    return list(tasks)


def fresh_optimizer(optimizer):
    """`optimizer` as a fresh instance cloned from its config (a name stays a name)."""
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer.__class__.from_config(optimizer.get_config())
    return optimizer


def compile_for_tasks(model, tasks, optimizer, **compile_kwargs):
    """Compiles `model` (outputs keyed by task) with each task's loss, weight and metrics.

    Metrics are `weighted_metrics`, so examples masked out with sample weight
    0 (see `keras_branching.datasets.mask_missing`) do not count in them.
    Every builder compiles through this function.

    Returns:
        The model.
    """
    model.compile(
        optimizer=optimizer,
        loss={t.name: t.loss for t in tasks},
        loss_weights={t.name: t.loss_weight for t in tasks},
        weighted_metrics={t.name: list(t.metrics) for t in tasks if t.metrics},
        **compile_kwargs,
    )
    return model
