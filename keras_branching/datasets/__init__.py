"""Data: synthetic tasks with known groups and loaders for real data sets."""

from keras_branching.datasets.batches import task_batches
from keras_branching.datasets.census import census_income
from keras_branching.datasets.missing import mask_missing
from keras_branching.datasets.mnist import multi_mnist
from keras_branching.datasets.omniglot import OmniglotTasks, omniglot
from keras_branching.datasets.synthetic import synthetic_tasks

__all__ = [
    "OmniglotTasks",
    "census_income",
    "mask_missing",
    "multi_mnist",
    "omniglot",
    "synthetic_tasks",
    "task_batches",
]
