"""Data: synthetic tasks with known groups and loaders for real data sets."""

from keras_branching.datasets.census import census_income
from keras_branching.datasets.missing import mask_missing
from keras_branching.datasets.synthetic import synthetic_tasks

__all__ = ["census_income", "mask_missing", "synthetic_tasks"]
