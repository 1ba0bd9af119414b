"""`WeightedModel`: trains any multi-task model with a loss-weighting scheme."""

import keras
from keras import ops

from keras_branching import data_checks
from keras_branching.weighting.base import LossWeighting, num_replicas

_MEAN_REDUCTIONS = ("sum_over_batch_size", "mean", "mean_with_sample_weight")


class _FunctionLoss(keras.losses.Loss):
    """A loss function as a `keras.losses.Loss` (mean over the batch)."""

    def __init__(self, fn, name):
        super().__init__(name=name)
        self.fn = fn

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred)


def _as_loss(identifier, task):
    loss = keras.losses.get(identifier)
    if loss is None:
        raise ValueError(f"Expected a loss for task {task!r}. Received: {identifier!r}")
    if not isinstance(loss, keras.losses.Loss):
        loss = _FunctionLoss(loss, name=f"{task}_loss")
    return loss


@keras.saving.register_keras_serializable(package="keras_branching")
class WeightedModel(keras.Model):
    """Wraps a multi-task model so that `fit` weighs its task losses with a scheme.

    `model` is any Keras model whose output is a dict keyed by task name: a
    model from `BranchedModelBuilder.build`, a learning-to-branch supernet,
    a routing model. The wrapper shares its layers and weights; after
    training, save or export `weighted.model`, the plain model, which has
    no weighting machinery in it.

    Compile the wrapper as the model itself would be compiled, with a
    `loss` dict keyed by task name (`builder.compile(weighted)` does this).
    Each step computes every task's loss `L_i` (with its sample weights,
    so missing labels masked by `mask_missing` add nothing), multiplies it
    by its fixed `loss_weights` entry (`Task.loss_weight`, default 1), and
    lets `weighting` turn the vector of losses into the loss that is
    minimised. Regularisation losses of the layers are added unweighted.
    The raw task losses are logged as `"{task}_loss"` and the scheme's
    current weights as `"{task}_weight"`. `fit` adds the scheme's callbacks
    (`weighting.callbacks()`) to the ones it is given.

    Under `tf.distribute` each replica weighs its own task losses and the
    result is scaled by the number of replicas, as Keras scales losses.

    Args:
        model: a Keras model whose output is a dict keyed by task name.
        weighting: a `LossWeighting` over the same task names.
        **kwargs: base model arguments (`name`...).

    Example:

    >>> import keras
    >>> from keras_branching.builder import BranchedModelBuilder
    >>> from keras_branching.task import Task
    >>> from keras_branching.weighting.uncertainty import UncertaintyWeighting
    >>> builder = BranchedModelBuilder(
    ...     (4,), [lambda: keras.layers.Dense(8)],
    ...     [Task(n, lambda: keras.layers.Dense(1), "mse") for n in "ab"])
    >>> model = builder.build(builder.shared_tree(), compile=False)
    >>> weighted = WeightedModel(model, UncertaintyWeighting(builder.task_names))
    >>> _ = builder.compile(weighted)
    >>> x = keras.random.normal((8, 4), seed=0)
    >>> y = {"a": keras.ops.zeros((8, 1)), "b": keras.ops.ones((8, 1))}
    >>> sorted(weighted.fit(x, y, verbose=0).history)
    ['a_loss', 'a_weight', 'b_loss', 'b_weight', 'loss']
    """

    def __init__(self, model, weighting, **kwargs):
        if not isinstance(model, keras.Model):
            raise TypeError(
                f"Expected `model` to be a Keras model. Received: model={model!r} "
                f"(of type {type(model).__name__})"
            )
        if not isinstance(weighting, LossWeighting):
            raise TypeError(
                "Expected `weighting` to be a `keras_branching.weighting.LossWeighting`. "
                f"Received: weighting={weighting!r} (of type {type(weighting).__name__})"
            )
        output = getattr(model, "output", None) if model.built else None
        if output is not None:
            if not isinstance(output, dict):
                raise ValueError(
                    "Expected a model whose output is a dict keyed by task name. "
                    f"Received a model with output {output!r}"
                )
            if set(output) != set(weighting.tasks):
                raise ValueError(
                    f"The model's outputs {sorted(output)} differ from the weighting's "
                    f"tasks {sorted(weighting.tasks)}."
                )
        kwargs.setdefault("name", f"weighted_{model.name}")
        super().__init__(**kwargs)
        self.model = model
        self.weighting = weighting
        tasks = weighting.tasks
        self._task_loss_trackers = [keras.metrics.Mean(name=f"{t}_loss") for t in tasks]
        self._task_weight_trackers = [keras.metrics.Mean(name=f"{t}_weight") for t in tasks]
        self._task_loss_fns = None
        self._fixed_weights = None
        self._loss_arguments = None

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, **kwargs):
        """Configures training; `loss` (and `loss_weights`) are dicts keyed by task.

        Other arguments (`metrics`, `weighted_metrics`, `jit_compile`...)
        are those of `keras.Model.compile`.
        """
        tasks = self.weighting.tasks
        if not isinstance(loss, dict) or set(loss) != set(tasks):
            raise ValueError(
                f"Expected `loss` to be a dict with one loss per task {list(tasks)}. "
                f"Received: loss={loss!r}"
            )
        loss_weights = dict(loss_weights or {})
        unknown = sorted(set(loss_weights) - set(tasks))
        if unknown:
            raise ValueError(
                f"Unknown tasks {unknown} in `loss_weights`. Expected keys among "
                f"{list(tasks)}. Received: loss_weights={loss_weights!r}"
            )
        self._task_loss_fns = [_as_loss(loss[t], t) for t in tasks]
        self._fixed_weights = [float(loss_weights.get(t, 1.0)) for t in tasks]
        self._loss_arguments = {"loss": dict(loss), "loss_weights": loss_weights or None}
        super().compile(optimizer=optimizer, **kwargs)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None and self._loss_arguments is not None:
            config.update(keras.saving.serialize_keras_object(self._loss_arguments))
            # Whether the saved optimizer has its slot variables: a model
            # saved before training has none, and the reload must match.
            config["optimizer_built"] = bool(getattr(self.optimizer, "built", False))
        return config

    def compile_from_config(self, config):
        config = dict(config)
        optimizer_built = config.pop("optimizer_built", True)
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built and optimizer_built:
            # Create the optimizer's variables so the saved state (step
            # count, moments) loads into them and training resumes exactly.
            self.optimizer.build(self.trainable_variables)

    # The loss.

    def task_losses(self, y, y_pred, sample_weight=None):
        """The `(num_tasks,)` vector of task losses, fixed weights applied.

        Each loss is the one replica's (not divided by the number of
        replicas). Also updates the `"{task}_loss"` metrics.
        """
        if self._task_loss_fns is None:
            raise RuntimeError("Compile the model with a `loss` dict before training it.")
        if not isinstance(y, dict):
            raise ValueError(
                "Expected the targets `y` to be a dict keyed by task name. "
                f"Received: y of type {type(y).__name__}"
            )
        replicas = num_replicas()
        values = []
        for i, task in enumerate(self.weighting.tasks):
            weight = sample_weight[task] if isinstance(sample_weight, dict) else sample_weight
            loss_fn = self._task_loss_fns[i]
            value = ops.cast(loss_fn(y[task], y_pred[task], sample_weight=weight), "float32")
            if replicas > 1 and loss_fn.reduction in _MEAN_REDUCTIONS:
                value = value * replicas  # Keras divides by the replicas; undo it here.
            self._task_loss_trackers[i].update_state(value)
            values.append(value * self._fixed_weights[i])
        return ops.stack(values)

    def task_presence(self, sample_weight=None):
        """`(num_tasks,)`: 1 for a task with a labelled example in the batch, else 0.

        A task is absent from a batch when all its sample weights are 0 (all
        its labels missing, see `mask_missing`).
        """
        present = []
        for task in self.weighting.tasks:
            if isinstance(sample_weight, dict) and sample_weight.get(task) is not None:
                weight = ops.abs(ops.cast(sample_weight[task], "float32"))
                present.append(ops.cast(ops.sum(weight) > 0, "float32"))
            else:
                present.append(ops.ones((), "float32"))
        return ops.stack(present)

    def total_loss(self, losses, present=None):
        """The scheme's loss of a task-loss vector, scaled for the replicas.

        `present` (see `task_presence`) lets the scheme leave out tasks that
        have no label in the batch.
        """
        weights = self.weighting.task_weights()
        for i, tracker in enumerate(self._task_weight_trackers):
            tracker.update_state(weights[i])
        if present is None:
            present = ops.ones((self.weighting.num_tasks,), "float32")
        total = self.weighting(losses, present)
        replicas = num_replicas()
        if replicas > 1:
            total = total / replicas
        for loss in self.losses:
            total = total + self._aggregate_additional_loss(loss)
        return total

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        del x, training
        losses = self.task_losses(y, y_pred, sample_weight)
        return self.total_loss(losses, self.task_presence(sample_weight))

    def train_step(self, *args):
        # JAX's `train_step(state, data)` and TensorFlow's `train_step(data)`;
        # only the TensorFlow one feeds task gradients to the scheme.
        if not self.weighting.needs_task_gradients:
            return super().train_step(*args)
        return self._train_step_with_task_gradients(*args)

    def _train_step_with_task_gradients(self, data):
        """The TensorFlow training step that also feeds per-task gradient norms."""
        import tensorflow as tf

        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        shared = self.weighting.shared_variables(self.model)
        with tf.GradientTape(persistent=True) as tape:
            y_pred = self(x, training=True)
            losses = self.task_losses(y, y_pred, sample_weight)
            present = self.task_presence(sample_weight)
            total = self.total_loss(losses, present)
            per_task = [losses[i] for i in range(self.weighting.num_tasks)]
            scaled = self.optimizer.scale_loss(total)
        trainable = self.trainable_variables
        gradients = tape.gradient(scaled, trainable)
        task_gradients = [tape.gradient(t, shared) for t in per_task]
        del tape
        replica_context = tf.distribute.get_replica_context()
        if num_replicas() > 1 and replica_context is not None:
            # The norms and losses of the global batch, as on one device: the
            # mean over replicas of their per-task gradients and losses.
            task_gradients = [
                replica_context.all_reduce(
                    tf.distribute.ReduceOp.MEAN, [g for g in grads if g is not None]
                )
                for grads in task_gradients
            ]
            losses = replica_context.all_reduce(tf.distribute.ReduceOp.MEAN, losses)
            present = tf.cast(
                replica_context.all_reduce(tf.distribute.ReduceOp.SUM, present) > 0, tf.float32
            )
        norms = tf.stack([tf.linalg.global_norm(grads) for grads in task_gradients])
        self.weighting.update_from_gradients(losses, norms, present)
        self.optimizer.apply_gradients(
            [(g, v) for g, v in zip(gradients, trainable) if g is not None]
        )
        batch = tf.shape(keras.tree.flatten(x)[0])[0]
        self._loss_tracker.update_state(total * num_replicas(), sample_weight=batch)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, after checking the data, with the scheme's callbacks added.

        The data is checked as `TaskModel.fit` checks it
        (`keras_branching.data_checks.check_data`).

        Raises:
            keras_branching.data_checks.DataError: for data that cannot be
                trained on.
        """
        data_checks.check_fit_call(list(self.weighting.tasks), args, kwargs)
        extra = self.weighting.callbacks()
        if extra:
            if len(args) > 5:  # callbacks given positionally
                args = (*args[:5], list(args[5] or []) + extra, *args[6:])
            else:
                kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + extra
        return super().fit(*args, **kwargs)

    # Saving.

    def get_config(self):
        return {
            "name": self.name,
            "model": keras.saving.serialize_keras_object(self.model),
            "weighting": keras.saving.serialize_keras_object(self.weighting),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(config.pop("model"), custom_objects)
        weighting = keras.saving.deserialize_keras_object(config.pop("weighting"), custom_objects)
        return cls(model, weighting, **config)
