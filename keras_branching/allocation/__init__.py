"""Learned parameter allocation: `Allocation`, `AllocationBuilder`, `LearnedAllocation`."""

from keras_branching.allocation.builder import AllocationBuilder
from keras_branching.allocation.export import export_allocation_network, task_model
from keras_branching.allocation.plan import Allocation
from keras_branching.allocation.search import (
    LearnedAllocation,
    build_routed_network,
    read_allocation,
    routed_masks,
)

__all__ = [
    "Allocation",
    "AllocationBuilder",
    "LearnedAllocation",
    "build_routed_network",
    "export_allocation_network",
    "read_allocation",
    "routed_masks",
    "task_model",
]
