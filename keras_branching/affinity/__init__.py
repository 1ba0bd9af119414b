"""Affinity-guided branching (Vandenhende et al., BMVC 2020).

`AffinityBranching` is the search. Its parts: `rdm`, `rsa_affinity` and
`TaskAffinity` measure how alike tasks represent their inputs (`rsa.py`);
`tree_cost`, `enumerate_trees` and `select_tree` find the cheapest
branching tree under a size budget (`tree_search.py`);
`branch_point_features` reads the features of a trained model of
single-task networks (`features.py`).
"""

from keras_branching.affinity.features import branch_point_features
from keras_branching.affinity.rsa import TaskAffinity, rdm, rsa_affinity
from keras_branching.affinity.search import AffinityBranching
from keras_branching.affinity.tree_search import enumerate_trees, select_tree, tree_cost

__all__ = [
    "AffinityBranching",
    "TaskAffinity",
    "branch_point_features",
    "enumerate_trees",
    "rdm",
    "rsa_affinity",
    "select_tree",
    "tree_cost",
]
