"""Learning to branch (Guo, Lee, Ulbricht, ICML 2020): a supernet picks the tree.

`LearnToBranch(builder, widths).search(x, y, ...)` trains the supernet
(`build_supernet`) with `fit` and returns a `SearchResult` whose plan is the
derived `BranchingTree` (`derive_tree`).
"""

from keras_branching.learn_to_branch.search import LearnToBranch
from keras_branching.learn_to_branch.supernet import (
    build_supernet,
    derive_tree,
    router_probabilities,
    supernet_parents,
)

__all__ = [
    "LearnToBranch",
    "build_supernet",
    "derive_tree",
    "router_probabilities",
    "supernet_parents",
]
