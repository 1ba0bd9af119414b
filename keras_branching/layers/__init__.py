"""Custom Keras layers of keras_branching, each registered for serialisation."""

from keras_branching.layers.allocation_mask import AllocationMask
from keras_branching.layers.branch_point import BranchPoint
from keras_branching.layers.empty_allocation import EmptyAllocation
from keras_branching.layers.gated_route import GatedRoute
from keras_branching.layers.group_gather import GatherGroups, JoinGroups, SelectGroup, StackGroups
from keras_branching.layers.gumbel_router import GumbelRouter
from keras_branching.layers.joint_components import JointComponents
from keras_branching.layers.stacked import StackedBlock
from keras_branching.layers.supernet_route import SupernetRoute
from keras_branching.layers.task_batches import JoinTaskBatches, SplitTaskBatches

__all__ = [
    "AllocationMask",
    "BranchPoint",
    "EmptyAllocation",
    "GatedRoute",
    "GatherGroups",
    "JoinGroups",
    "GumbelRouter",
    "JoinTaskBatches",
    "JointComponents",
    "SelectGroup",
    "SplitTaskBatches",
    "StackGroups",
    "StackedBlock",
    "SupernetRoute",
]
