"""Argument checks and name handling shared across the package."""

import math
import numbers
import re


def check_positive(name, value):
    """`value` as a float if it is a finite real number > 0; else a ValueError."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"Expected `{name}` > 0. Received: {name}={value!r}")
    return float(value)


def check_non_negative(name, value, context=""):
    """`value` as a float if it is a finite real number >= 0; else a ValueError.

    `context` is appended to the message (e.g. " for task 'a'").
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(
            f"Expected `{name}` to be a finite number >= 0. Received: {name}={value!r}{context}"
        )
    return float(value)


def check_positive_int(name, value):
    """`value` as an int if it is an integer >= 1; a TypeError or ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"Expected `{name}` to be an int. Received: {name}={value!r}")
    if value < 1:
        raise ValueError(f"Expected `{name}` >= 1. Received: {name}={value!r}")
    return int(value)


def check_tasks(tasks):
    """`tasks` as a list if it is a non-empty list of `Task` with unique names."""
    from keras_branching.task import Task  # task.py imports this module

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


def sanitize_name(name):
    """`name` with every character TensorFlow scopes reject replaced by `_`."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)
