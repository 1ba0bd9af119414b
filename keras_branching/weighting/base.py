"""`LossWeighting`: the base class of every loss-weighting scheme."""

import keras
from keras import ops

from keras_branching.tree import check_task_names


def num_replicas():
    """Replicas in sync under the current `tf.distribute` strategy (1 elsewhere)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


class LossWeighting(keras.layers.Layer):
    """Base class of the schemes that weigh task losses into one loss.

    A scheme is a layer: `weighting(losses)` maps the vector of the task
    losses (shape `(num_tasks,)`, in the order of `tasks`) to the scalar
    that training minimises. Its state (learned log-variances, current
    weights) lives in its variables, so it is saved, restored and
    distributed with the model. Schemes run in float32 whatever the dtype
    policy.

    Subclasses implement `task_weights()` (the weight each task's loss
    currently gets) and, when the total is not `sum(weights * losses)`,
    `call`. Three optional hooks let a scheme act outside the loss:

    - `callbacks()`: callbacks `WeightedModel.fit` adds to every `fit`
      (dynamic weight averaging updates its weights at the end of each
      epoch);
    - `needs_task_gradients` and `update_from_gradients(losses, norms,
      present)`:
      the training step of `WeightedModel` then also computes, for each
      task, the norm of the gradient of its loss with respect to the
      variables `shared_variables(model)` returns, and hands both to the
      scheme before applying the gradients (GradNorm; TensorFlow only).

    Args:
        tasks: the task names, in the order of the loss vector.
        **kwargs: base layer arguments (`name`...).
    """

    needs_task_gradients = False

    def __init__(self, tasks, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.tasks = check_task_names(tasks)

    @property
    def num_tasks(self):
        return len(self.tasks)

    def task_weights(self):
        """The current weight of each task's loss, a `(num_tasks,)` tensor."""
        raise NotImplementedError

    def call(self, losses, present=None):
        """The loss to minimise.

        Args:
            losses: `(num_tasks,)` task losses.
            present: optional `(num_tasks,)` 0/1 vector; 0 for a task with no
                label in the batch (its loss is then 0). Schemes with terms
                beyond `weight * loss` leave such tasks out.
        """
        del present  # an absent task's loss is 0 already
        return ops.sum(ops.stop_gradient(self.task_weights()) * losses)

    def compute_output_shape(self, input_shape):
        return ()

    def callbacks(self):
        """Callbacks the scheme needs during `fit` (none by default)."""
        return []

    def shared_variables(self, model):
        """The variables whose per-task gradient norms the scheme reads."""
        raise NotImplementedError

    def update_from_gradients(self, losses, gradient_norms, present=None):
        """Hook called by the training step with per-task gradient norms."""
        raise NotImplementedError

    def weights_dict(self):
        """The current task weights as a `{task: float}` dict."""
        values = keras.ops.convert_to_numpy(self.task_weights())
        return {task: float(v) for task, v in zip(self.tasks, values)}

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        config.update({"tasks": list(self.tasks)})
        return config
