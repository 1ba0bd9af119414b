"""Loss weighting: how much each task's loss counts in the loss a model minimises.

Fixed weights come from `Task.loss_weight`. The schemes here change them
during training; each is a `LossWeighting` (one file per scheme), and
`WeightedModel` trains any multi-task model with one of them through
`fit`:

- `UncertaintyWeighting` (Kendall et al. 2018): learned per-task
  log-variances; any backend.
- `DynamicWeightAverage` (Liu et al. 2019): weights from the rate at which
  each task's loss falls, updated every epoch; any backend.
- `GradNorm` (Chen et al. 2018): balances the tasks' gradient norms on the
  last shared layer; TensorFlow only.

See `docs/training.md` for when to use which.
"""

from keras_branching.weighting.base import LossWeighting
from keras_branching.weighting.dwa import DynamicWeightAverage
from keras_branching.weighting.gradnorm import GradNorm
from keras_branching.weighting.model import WeightedModel
from keras_branching.weighting.uncertainty import UncertaintyWeighting

__all__ = [
    "DynamicWeightAverage",
    "GradNorm",
    "LossWeighting",
    "UncertaintyWeighting",
    "WeightedModel",
]
