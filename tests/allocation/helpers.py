"""Small builders and data shared by the allocation tests."""

import keras
import numpy as np

from keras_branching.allocation import Allocation, AllocationBuilder
from keras_branching.task import Task

NAMES = ["a", "b", "c"]


def dense(units=6):
    return lambda: keras.layers.Dense(units, activation="relu")


def tasks(names=NAMES, metrics=None):
    return [Task(n, head=lambda: keras.layers.Dense(1), loss="mse", metrics=metrics) for n in names]


def builder(names=NAMES, per_task=True, **kwargs):
    """Routed layer (3 components), shared LayerNormalization, routed layer (2 components).

    One input per task, or (`per_task=False`) one input for every task.
    """
    layers = [
        [dense(), dense(), keras.layers.Identity],
        keras.layers.LayerNormalization,
        [dense(), dense()],
    ]
    inputs = dict.fromkeys(names, (6,)) if per_task else (6,)
    return AllocationBuilder(inputs=inputs, layers=layers, tasks=tasks(names), **kwargs)


def data(n=8, dim=6, seed=0, names=NAMES):
    """Per-task arrays of different lengths (each task its own examples)."""
    rng = np.random.default_rng(seed)
    x = {t: rng.standard_normal((n + i, dim)).astype("float32") for i, t in enumerate(names)}
    y = {t: rng.standard_normal((n + i, 1)).astype("float32") for i, t in enumerate(names)}
    return x, y


def shared_data(n=32, dim=6, seed=0, names=NAMES):
    """One input for every task, and a target per task."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype("float32")
    return x, {t: rng.standard_normal((n, 1)).astype("float32") for t in names}


ALLOCATION = Allocation(
    NAMES,
    [
        [[1, 0, 1], [1, 1, 1], [0, 0, 1]],
        [[1, 0], [0, 0], [1, 1]],  # task b uses nothing in the second routed layer
    ],
)


def set_allocation(model, allocation):
    """Sets the routed network's logits so that its greedy allocation is `allocation`."""
    from keras_branching.allocation import routed_masks

    for mask, on in zip(routed_masks(model), allocation.layers):
        logits = np.zeros(on.shape + (2,), "float32")
        logits[..., 0] = np.where(on, 1.0, -1.0)
        mask.logits.assign(logits)
