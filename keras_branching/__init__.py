"""keras_branching: decide which layers which tasks share, as plain Keras models."""

from keras_branching._quiet import import_keras_quietly

import_keras_quietly()  # before anything imports keras; see _quiet.py

# ruff: noqa: E402

from keras_branching import affinity, callbacks, datasets, layers, tuning, weighting
from keras_branching.affinity_branching import AffinityBranching, AffinityBranchingResult
from keras_branching.allocation import AllocationBuilder, AllocationModel, task_batches, task_model
from keras_branching.builder import BranchedModelBuilder
from keras_branching.layers import AllocationMask, BranchPoint, GumbelRouter
from keras_branching.learn_to_branch import LearnToBranch
from keras_branching.reading import read_tree
from keras_branching.routing import RoutingModelBuilder, RoutingPlan, ShareRouting
from keras_branching.supernet import RouterOptimizer, build_supernet, derive_tree
from keras_branching.task import Task
from keras_branching.tree import BranchingTree

__version__ = "0.1.0"

__all__ = [
    "AffinityBranching",
    "AffinityBranchingResult",
    "AllocationBuilder",
    "AllocationMask",
    "AllocationModel",
    "BranchPoint",
    "BranchedModelBuilder",
    "BranchingTree",
    "GumbelRouter",
    "LearnToBranch",
    "RouterOptimizer",
    "RoutingModelBuilder",
    "RoutingPlan",
    "ShareRouting",
    "Task",
    "affinity",
    "build_supernet",
    "callbacks",
    "datasets",
    "derive_tree",
    "layers",
    "read_tree",
    "task_batches",
    "task_model",
    "tuning",
    "weighting",
]
