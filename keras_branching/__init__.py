"""keras_branching: decide which layers which tasks share, as plain Keras models."""

from keras_branching._quiet import import_keras_quietly

import_keras_quietly()  # before anything imports keras; see _quiet.py

# ruff: noqa: E402

import importlib

from keras_branching import callbacks, datasets, layers, optimizers, tuning, weighting
from keras_branching.layers import AllocationMask, BranchPoint, GumbelRouter
from keras_branching.builder import BranchedModelBuilder, read_tree
from keras_branching.search import Search, SearchResult
from keras_branching.task import Task
from keras_branching.tree import BranchingTree

__version__ = "0.2.0"

# TEMPORARY during the redesign: method names resolve lazily.
_LAZY = {
    "AffinityBranching": "keras_branching.affinity",
    "LearnToBranch": "keras_branching.learn_to_branch",
    "ShareRouting": "keras_branching.routing",
    "RoutingPlan": "keras_branching.routing",
    "RoutingModelBuilder": "keras_branching.routing",
    "LearnedAllocation": "keras_branching.allocation",
    "AllocationBuilder": "keras_branching.allocation",
    "Allocation": "keras_branching.allocation",
    "affinity": None,
    "learn_to_branch": None,
    "routing": None,
    "allocation": None,
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'keras_branching' has no attribute {name!r}")
    if _LAZY[name] is None:
        return importlib.import_module(f"keras_branching.{name}")
    return getattr(importlib.import_module(_LAZY[name]), name)
