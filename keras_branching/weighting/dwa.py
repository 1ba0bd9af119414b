"""Dynamic weight averaging (Liu, Johns, Davison, CVPR 2019)."""

import keras
import numpy as np

from keras_branching._validation import check_positive
from keras_branching.weighting.base import LossWeighting


@keras.saving.register_keras_serializable(package="keras_branching")
class DynamicWeightAverage(LossWeighting):
    """Weighs tasks by how slowly their losses fall (Liu et al. 2019).

    After each epoch `t - 1` (from the third epoch on) the weights become

        w_i(t) = K * exp(r_i / T) / sum_j exp(r_j / T),
        r_i = L_i(t - 1) / L_i(t - 2),

    where `L_i` is task `i`'s mean training loss over an epoch, `K` the
    number of tasks and `T` the temperature. A task whose loss falls slowly
    (ratio near or above 1) gains weight from the tasks that learn fast.
    The weights sum to `K`; the first two epochs use weight 1 for all.

    The update runs in a callback that `WeightedModel.fit` adds by itself
    (`callbacks()`); it reads the per-task losses `WeightedModel` logs as
    `"{task}_loss"`. `update(losses)` applies one update by hand. The
    state the update needs (the last two epochs' losses, the number of
    epochs seen) lives in variables, so a model saved to `.keras` (or
    backed up by `keras.callbacks.BackupAndRestore`) and reloaded resumes
    exactly where it stopped.

    Args:
        tasks: the task names (for example `builder.task_names`).
        temperature: `T` > 0; the paper uses 2. Larger values give more
            even weights.
        **kwargs: base layer arguments.

    Example:

    >>> weighting = DynamicWeightAverage(["a", "b"], temperature=2.0)
    >>> _ = weighting.update({"a": 1.0, "b": 1.0})   # epoch 1: no ratio yet
    >>> w = weighting.update({"a": 0.5, "b": 1.0})   # a learns fast
    >>> bool(w["b"] > 1.0 > w["a"])
    True
    """

    def __init__(self, tasks, temperature=2.0, **kwargs):
        super().__init__(tasks, **kwargs)
        self.temperature = check_positive("temperature", temperature)
        self.weight_variable = self.add_weight(
            shape=(self.num_tasks,),
            initializer="ones",
            trainable=False,
            name="task_weights",
        )
        # The state the update needs, in variables so that a saved and
        # reloaded model (or `BackupAndRestore`) resumes where it stopped.
        self.loss_history = self.add_weight(
            shape=(2, self.num_tasks),
            initializer="zeros",
            trainable=False,
            name="loss_history",
        )
        self.epochs_seen = self.add_weight(
            shape=(),
            initializer="zeros",
            dtype="int32",
            trainable=False,
            name="epochs_seen",
        )
        self.built = True

    def task_weights(self):
        return keras.ops.cast(self.weight_variable, "float32")

    def update(self, losses):
        """Records one epoch's mean task losses and updates the weights.

        The last two epochs' losses are kept in the variable `loss_history`
        (shape `(2, num_tasks)`, the last epoch second) and the number of
        epochs recorded in `epochs_seen`, so they are saved with the model.

        Args:
            losses: `{task: mean loss of the epoch}` (every task; finite).

        Returns:
            The new weights, a `{task: float}` dict.

        Raises:
            ValueError: if a task's loss is missing or not finite.
        """
        missing = [t for t in self.tasks if t not in losses]
        if missing:
            raise ValueError(
                f"Expected an epoch loss for every task; missing {missing}. "
                f"Received: losses={losses!r}"
            )
        current = np.array([float(np.mean(losses[t])) for t in self.tasks], "float32")
        if not np.all(np.isfinite(current)):
            bad = [t for t, v in zip(self.tasks, current) if not np.isfinite(v)]
            raise ValueError(
                f"Expected finite epoch losses. Received: losses={losses!r} (not finite for {bad})"
            )
        previous = keras.ops.convert_to_numpy(self.loss_history)[1]
        seen = int(keras.ops.convert_to_numpy(self.epochs_seen)) + 1
        self.loss_history.assign(np.stack([previous, current]))
        self.epochs_seen.assign(seen)
        if seen >= 2:
            ratios = current.astype("float64") / np.maximum(previous.astype("float64"), 1e-12)
            logits = ratios / self.temperature
            weights = np.exp(logits - logits.max())
            self.weight_variable.assign(self.num_tasks * weights / weights.sum())
        return self.weights_dict()

    def callbacks(self):
        return [_DynamicWeightAverageUpdate(self)]

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature})
        return config


class _DynamicWeightAverageUpdate(keras.callbacks.Callback):
    """Feeds each epoch's logged task losses to a `DynamicWeightAverage`."""

    def __init__(self, weighting):
        super().__init__()
        self.weighting = weighting

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        keys = {t: f"{t}_loss" for t in self.weighting.tasks}
        missing = [k for k in keys.values() if k not in logs]
        if missing:
            raise ValueError(
                f"DynamicWeightAverage reads the per-task losses {missing} from the "
                "epoch logs; train a `keras_branching.weighting.WeightedModel`, which "
                f"logs them. Received logs with keys {sorted(logs)}"
            )
        self.weighting.update({t: logs[k] for t, k in keys.items()})
