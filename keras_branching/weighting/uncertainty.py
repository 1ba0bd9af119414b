"""Uncertainty weighting (Kendall, Gal, Cipolla, CVPR 2018)."""

import numbers

import keras
from keras import ops

from keras_branching.weighting.base import LossWeighting


@keras.saving.register_keras_serializable(package="keras_branching")
class UncertaintyWeighting(LossWeighting):
    """Weighs tasks by learned homoscedastic uncertainty (Kendall et al. 2018).

    Each task `i` has a trainable log-variance `s_i = log sigma_i^2`,
    learned with the network by the model's optimizer. The loss is

        sum_i 0.5 * exp(-s_i) * L_i + 0.5 * s_i

    (the paper's Gaussian likelihood form). Minimising over `s_i` gives
    `exp(s_i) = L_i`, so a task's weight `0.5 * exp(-s_i)` settles at
    `1 / (2 L_i)`: a task whose loss stays high (noisy labels, a hard task)
    is weighted down, and tasks whose losses have different scales are
    brought to a common scale. The `0.5 * s_i` term stops the weights from
    collapsing to zero. A task with no label in a batch (see
    `mask_missing`) is left out of that batch's loss, log-variance term
    included.

    Do not apply weight decay (e.g. `AdamW`) to the log-variances.

    Args:
        tasks: the task names (for example `builder.task_names`).
        initial_log_variance: starting value of every `s_i` (default 0,
            every weight 0.5).
        **kwargs: base layer arguments.

    Example:

    >>> weighting = UncertaintyWeighting(["a", "b"])
    >>> weighting.weights_dict()
    {'a': 0.5, 'b': 0.5}
    >>> float(weighting(keras.ops.convert_to_tensor([2.0, 4.0])))
    3.0
    """

    def __init__(self, tasks, initial_log_variance=0.0, **kwargs):
        super().__init__(tasks, **kwargs)
        if isinstance(initial_log_variance, bool) or not isinstance(
            initial_log_variance, numbers.Real
        ):
            raise TypeError(
                "Expected `initial_log_variance` to be a number. "
                f"Received: initial_log_variance={initial_log_variance!r}"
            )
        self.initial_log_variance = float(initial_log_variance)
        self.log_variances = self.add_weight(
            shape=(self.num_tasks,),
            initializer=keras.initializers.Constant(self.initial_log_variance),
            trainable=True,
            name="log_variances",
        )
        self.built = True

    def task_weights(self):
        return 0.5 * ops.exp(-ops.cast(self.log_variances, "float32"))

    def call(self, losses, present=None):
        s = ops.cast(self.log_variances, "float32")
        terms = 0.5 * ops.exp(-s) * losses + 0.5 * s
        if present is not None:
            # A task without labels in the batch would only pull its
            # log-variance down (its loss is 0); leave it out instead.
            terms = terms * present
        return ops.sum(terms)

    def get_config(self):
        config = super().get_config()
        config.update({"initial_log_variance": self.initial_log_variance})
        return config
