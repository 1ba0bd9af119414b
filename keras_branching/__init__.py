"""keras_branching: decide which layers which tasks share, as plain Keras models.

Every method has the same shape: a plan (`BranchingTree`, `RoutingPlan`,
`Allocation`), a builder that turns a plan into a static Keras model, and a
search whose `search(x, y, ...)` trains through `fit` and returns a
`SearchResult`. See docs/search_protocol.md.
"""

from keras_branching._quiet import import_keras_quietly

import_keras_quietly()  # before anything imports keras; see _quiet.py

# ruff: noqa: E402

from keras_branching import (
    affinity,
    allocation,
    callbacks,
    datasets,
    distributed,
    evaluation,
    fusion,
    layers,
    learn_to_branch,
    naming,
    optimizers,
    routing,
    tuning,
    weighting,
)
from keras_branching.affinity import AffinityBranching
from keras_branching.allocation import Allocation, AllocationBuilder, LearnedAllocation
from keras_branching.builder import BranchedModelBuilder, read_tree
from keras_branching.data_checks import DataError
from keras_branching.layers import (
    AllocationMask,
    BranchPoint,
    GatedRoute,
    GumbelRouter,
    SupernetRoute,
)
from keras_branching.learn_to_branch import LearnToBranch
from keras_branching.routing import RoutingModelBuilder, RoutingPlan, ShareRouting
from keras_branching.search import Search, SearchResult
from keras_branching.task import Task
from keras_branching.tree import BranchingTree

__version__ = "0.4.0"

__all__ = [
    "AffinityBranching",
    "Allocation",
    "AllocationBuilder",
    "AllocationMask",
    "BranchPoint",
    "BranchedModelBuilder",
    "BranchingTree",
    "DataError",
    "GatedRoute",
    "GumbelRouter",
    "LearnToBranch",
    "LearnedAllocation",
    "RoutingModelBuilder",
    "RoutingPlan",
    "Search",
    "SearchResult",
    "ShareRouting",
    "SupernetRoute",
    "Task",
    "affinity",
    "allocation",
    "callbacks",
    "datasets",
    "distributed",
    "evaluation",
    "fusion",
    "layers",
    "learn_to_branch",
    "naming",
    "optimizers",
    "read_tree",
    "routing",
    "tuning",
    "weighting",
]
