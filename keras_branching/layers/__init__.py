"""Custom Keras layers of keras_branching, each registered for serialisation."""

from keras_branching.layers.branch_point import BranchPoint

__all__ = ["BranchPoint"]
