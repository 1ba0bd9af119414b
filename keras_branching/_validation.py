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


def sanitize_name(name):
    """`name` with every character TensorFlow scopes reject replaced by `_`."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)
