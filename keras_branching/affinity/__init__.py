"""Task affinity and tree search for affinity-guided branching.

`rdm`, `rsa_affinity` and `TaskAffinity` measure how alike tasks represent
their inputs; `tree_cost`, `enumerate_trees` and `select_tree` find the
cheapest branching tree under a size budget; `branch_point_features` reads
the features of a trained model of single-task networks.
"""

from keras_branching.affinity.features import branch_point_features
from keras_branching.affinity.rsa import TaskAffinity, rdm, rsa_affinity
from keras_branching.affinity.search import enumerate_trees, select_tree, tree_cost

__all__ = [
    "TaskAffinity",
    "branch_point_features",
    "enumerate_trees",
    "rdm",
    "rsa_affinity",
    "select_tree",
    "tree_cost",
]
