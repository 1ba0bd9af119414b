"""GradNorm (Chen, Badrinarayanan, Lee, Rabinovich, ICML 2018). TensorFlow only."""

import keras
from keras import ops

from keras_branching import naming
from keras_branching._validation import check_positive
from keras_branching.weighting.base import LossWeighting


@keras.saving.register_keras_serializable(package="keras_branching")
class GradNorm(LossWeighting):
    """Balances the tasks' gradient norms on the shared weights (Chen et al. 2018).

    Each step, for the weights `W` of the last layer every task shares,
    GradNorm compares each task's gradient norm `G_i = w_i ||dL_i/dW||`
    with a target `mean_j(G_j) * r_i^alpha`, where `r_i` is task `i`'s
    relative inverse training rate (`L_i / L_i(0)` divided by its mean over
    tasks). It moves the weights down the gradient of
    `sum_i |G_i - target_i|` (targets held constant), then renormalises
    them to sum to the number of tasks. So a task whose gradients dominate
    the shared weights is weighted down, and a task that trains slowly
    (high `r_i`) is weighted up; `alpha` sets how strongly.

    The gradient of that sum with respect to `w_i` is
    `sign(G_i - target_i) ||dL_i/dW||`; the step divides it by the mean of
    the norms over tasks, so `learning_rate` does not depend on the scale of
    the losses.

    TensorFlow only: the per-task gradient norms are computed inside the
    training step of `WeightedModel` (through the `needs_task_gradients` /
    `update_from_gradients` hook of `LossWeighting`), with a
    `tf.GradientTape`. Constructing it on another backend raises.

    Args:
        tasks: the task names (for example `builder.task_names`).
        alpha: asymmetry `alpha` > 0 (paper: 0.12 to 3; 1.5 is common).
        learning_rate: step size of the weight update, > 0.
        shared_layer: name of the layer whose weights are `W`. `None`
            takes the deepest block copy every task passes through in a
            model from `BranchedModelBuilder` (read from the graph).
        **kwargs: base layer arguments.

    Raises:
        RuntimeError: if the Keras backend is not TensorFlow.

    Example:

    >>> weighting = GradNorm(["a", "b"], alpha=1.5)
    >>> weighting.weights_dict()
    {'a': 1.0, 'b': 1.0}
    """

    needs_task_gradients = True

    def __init__(self, tasks, alpha=1.5, learning_rate=0.025, shared_layer=None, **kwargs):
        if keras.backend.backend() != "tensorflow":
            raise RuntimeError(
                "GradNorm needs the TensorFlow backend: it computes per-task gradient "
                "norms inside the training step with `tf.GradientTape`. Received: "
                f"backend={keras.backend.backend()!r}. Use `UncertaintyWeighting` or "
                "`DynamicWeightAverage`, which run on every backend."
            )
        super().__init__(tasks, **kwargs)
        self.alpha = check_positive("alpha", alpha)
        self.learning_rate = check_positive("learning_rate", learning_rate)
        if shared_layer is not None and (not isinstance(shared_layer, str) or not shared_layer):
            raise TypeError(
                "Expected `shared_layer` to be a layer name or None. "
                f"Received: shared_layer={shared_layer!r}"
            )
        self.shared_layer = shared_layer
        # Assigned in the replica context under `tf.distribute`: the replicas'
        # values are averaged.
        self.weight_variable = self.add_weight(
            shape=(self.num_tasks,),
            initializer="ones",
            trainable=False,
            aggregation="mean",
            name="task_weights",
        )
        self.initial_losses = self.add_weight(
            shape=(self.num_tasks,),
            initializer="zeros",
            trainable=False,
            aggregation="mean",
            name="initial_losses",
        )
        self.built = True

    def task_weights(self):
        return ops.cast(self.weight_variable, "float32")

    def shared_variables(self, model):
        """The trainable variables of the shared layer of `model`.

        Raises:
            ValueError: if the layer is not found or has no trainable weights.
        """
        name = self.shared_layer
        if name is None:
            chains = list(naming.task_block_chains(model).values())
            # The last block copy that every task passes through. In a fused
            # model a `StackedBlock` of several groups holds each group's own
            # copy: only one of a single group is shared.
            shared = [
                name
                for name in chains[0]
                if all(name in chain for chain in chains)
                and model.get_layer(name).trainable_weights
                and getattr(model.get_layer(name), "num_groups", 1) == 1
            ]
            if not shared:
                raise ValueError(
                    "GradNorm needs a layer every task shares; this model's tree splits "
                    "the tasks at the first block. Pass `shared_layer=` the name of the "
                    f"layer to balance. Layers: {[layer.name for layer in model.layers]}"
                )
            name = shared[-1]
        try:
            layer = model.get_layer(name)
        except ValueError as error:
            raise ValueError(
                f"GradNorm's `shared_layer` {name!r} is not a layer of model {model.name!r}."
            ) from error
        variables = list(layer.trainable_variables)
        if not variables:
            raise ValueError(
                f"GradNorm's shared layer {name!r} has no trainable weights. "
                "Pass `shared_layer=` a layer with weights."
            )
        return variables

    def update_from_gradients(self, losses, gradient_norms, present=None):
        """One GradNorm update of the weights.

        Args:
            losses: `(num_tasks,)` task losses of this step.
            gradient_norms: `(num_tasks,)` norms `||dL_i/dW||` of each task's
                (unweighted) loss on the shared weights.
            present: optional `(num_tasks,)` 0/1 vector; the weight of a task
                with no label in the batch is left as it is (up to the
                renormalisation).
        """
        losses = ops.cast(ops.stop_gradient(losses), "float32")
        norms = ops.cast(ops.stop_gradient(gradient_norms), "float32")
        if present is None:
            present = ops.ones_like(losses)
        present = ops.cast(present, "float32")
        initial = ops.where(self.initial_losses > 0, self.initial_losses, losses * present)
        self.initial_losses.assign(initial)
        weights = self.task_weights()
        grad_norms = weights * norms
        count = ops.maximum(ops.sum(present), 1.0)

        def mean(values):  # over the tasks present in the batch
            return ops.sum(values * present) / count

        ratios = losses / ops.maximum(initial, 1e-12)
        relative = ratios / ops.maximum(mean(ratios), 1e-12)
        target = mean(grad_norms) * ops.power(relative, self.alpha)
        step = ops.sign(grad_norms - target) * norms / ops.maximum(mean(norms), 1e-12)
        weights = ops.maximum(weights - self.learning_rate * step * present, 1e-3)
        self.weight_variable.assign(self.num_tasks * weights / ops.sum(weights))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "alpha": self.alpha,
                "learning_rate": self.learning_rate,
                "shared_layer": self.shared_layer,
            }
        )
        return config
