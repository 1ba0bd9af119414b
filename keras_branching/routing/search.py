"""`ShareRouting`: the share-routing search of MTNAS (methods.md, section 3).

Roles, as in keras-tuner: `RoutingPlan` is what to build, `RoutingModelBuilder`
builds it, and `ShareRouting` decides which plan, by training a
weight-sharing supernet and a policy over its routes through `model.fit`.
"""

import numbers
import sys

import keras
import numpy as np

from keras_branching import naming
from keras_branching._validation import check_non_negative, check_positive, check_positive_int
from keras_branching.data_checks import DataError
from keras_branching.layers.supernet_route import SupernetRoute, route_choices
from keras_branching.routing.builder import RoutingModelBuilder
from keras_branching.routing.plan import INPUT, RoutingPlan
from keras_branching.search import DivergenceError, Search

_MAX_CHOICES = 4096
_EPSILON = 1e-8


def _is_dataset(data):
    tf = sys.modules.get("tensorflow")  # a dataset means TensorFlow is loaded already
    return tf is not None and isinstance(data, tf.data.Dataset)


class ShareRouting(Search):
    """Share-routing search (MTNAS; Chen et al., arXiv 2009.00387).

    The search space is the `RoutingPlan`s of the builder's layers with
    `num_experts` sub-networks each. A *block* is a sub-network of layer 2
    or later, or a task's tower; each block chooses a route (a non-empty set
    of sub-networks of the layer below, at most `max_route_size` of them)
    and a gate query (the input, or, with `queries="all"`, one sub-network
    of the layer below). The first layer reads the input and has no
    choice. Each block has an independent categorical distribution (its
    policy, initially uniform) over its choices; a route of one member has
    no gate, so it is one choice, not one per query.

    The search model is one weight-sharing supernet: `num_experts`
    sub-networks per layer and, in front of every block, a
    `keras_branching.layers.SupernetRoute` holding the gates of every
    candidate query over every candidate member and the block's policy.
    `search` trains it with `model.fit`, alternating, as in the paper:

    1. weights: at every training step each `SupernetRoute` draws its
       block's choice from its policy (inside the model, with
       `keras.random`), and the step is a gradient step of the tasks'
       losses on that architecture;
    2. policy: every `steps_per_update` training batches from epoch
       `warmup_epochs + 1` on, a callback draws `samples_per_update`
       architectures, scores each on the same `validation_batch_size`
       validation examples (drawn anew at each update) with the per-task
       `metric` (default `keras.metrics.AUC`), and takes one REINFORCE step
       with `keras.optimizers.Adam(policy_learning_rate)`: the gradient of
       `mean_i (R_i - b) / s log p(a_i)` with respect to each block's
       logits, where `b` is the block's moving baseline (an exponential
       average of its past mean rewards with decay `baseline_decay`,
       started at the first one) and `s` a moving standard deviation of
       `R - b`, plus `entropy_weight` times the gradient of the policy's
       entropy.

    The plan is the most probable choice of each block
    (`SearchResult.plan`), to build with `result.build()` and retrain from
    scratch. The epoch logs, and so `result.history`, hold `reward` (the
    mean score of the epoch's sampled architectures) and `baseline` (the
    blocks' mean baseline) for every epoch with policy updates, and
    `entropy` (the blocks' mean policy entropy, in nats) for every epoch;
    `val_*` entries score the current most probable architecture. The
    result's `details` hold every block's final probabilities.

    The search state (weights, policy logits, baselines, the policy
    optimizer, the samplers' seed states) is the model's, so a search
    interrupted and run again with the same
    `keras.callbacks.BackupAndRestore` continues from its last completed
    epoch; with a `seed` and unshuffled data (`shuffle=False`) it finds the
    same plan as an uninterrupted run. Trains on TensorFlow and JAX.

    Settings the paper leaves open, and the values chosen here: joint
    (route, query) categorical per block; uniform initial policies; one
    architecture per training step; advantages standardised by a moving
    standard deviation, so the other settings do not depend on the
    metric's scale (AUC differences between architectures are small); Adam
    on the logits; gate kernels start at zero, so a new gate mixes its
    members equally. Two additions against the collapse of the policies
    onto whichever sub-network trained first (the "Matthew effect" of
    weight-sharing searches): per-task credit (`credit="tasks"`) and an
    entropy bonus (`entropy_weight=0.5`). `credit="global",
    entropy_weight=0` is the paper's plain REINFORCE (with standardised
    advantages).

    Args:
        builder: a `RoutingModelBuilder`; its inputs must be a batch of
            vectors, since gates read them.
        num_experts: sub-networks per layer, an int >= 1.
        queries: `"input"` (every gate is queried by the input) or `"all"`
            (the input or any sub-network of the layer below).
        max_route_size: the largest route considered (default:
            `num_experts`, every non-empty subset).
        policy_learning_rate: Adam learning rate of the policy logits, > 0.
        baseline_decay: decay of the moving baseline, in [0, 1).
        entropy_weight: weight of the policies' entropy added to the
            REINFORCE objective, >= 0; keeps sampling choices that look
            worse while the weights are still young.
        credit: `"tasks"` or `"global"`: which tasks' scores reward a
            block's choice. `"global"`: the mean over all tasks, literally
            as in the paper. `"tasks"` (default): the mean over the tasks
            the block reaches in the sampled architecture (a tower its own
            task; a sub-network the towers that depend on it; a block
            nobody depends on gets no reward). A block's choice cannot
            change the other tasks' predictions, so this drops their noise
            from its gradient.
        warmup_epochs: epochs of weight training before the first policy
            update, an int >= 0 (smaller than `search`'s `epochs`).
        steps_per_update: training batches between policy updates, >= 1.
        samples_per_update: architectures scored per update, >= 1.
        validation_batch_size: validation examples scored per update (a
            random subset, the same for every architecture of the update),
            >= 1.
        validation_split: when `search` gets no `validation_data`, the
            fraction of the training data held out for the reward: the
            last `validation_split` of the examples (of the batches, for a
            dataset of known size); in (0, 1), default 0.2.
        metric: the per-task score, a `keras.metrics.Metric` instance whose
            higher values are better (cloned for each task). By default it
            is chosen per task from the validation targets (see
            `reward_metric`): `keras.metrics.AUC()` for 0/1 targets, the
            negative mean squared error for real-valued (float) regression
            targets; any other targets (integer class labels other than
            0/1, strings, NaN or inf, float targets of a cross-entropy
            task) stop the search with a `DataError` naming the task unless
            a `metric` is given. `result.details["reward_metrics"]` states
            the choice. Validation examples with sample weight 0 (the third
            element of `validation_data`, for example from
            `keras_branching.datasets.mask_missing`) do not count. The
            reward is the metric's mean over the credited tasks.
        seed: optional int: the initial weights, every sampler's seed and
            the policy updates' draws derive from it.

    Example:

    >>> import keras, numpy as np
    >>> from keras_branching.task import Task
    >>> tasks = [
    ...     Task(t, head=lambda: keras.layers.Dense(1, activation="sigmoid"),
    ...          loss="binary_crossentropy")
    ...     for t in ("a", "b")
    ... ]
    >>> builder = RoutingModelBuilder((5,), [lambda: keras.layers.Dense(4)] * 2, tasks)
    >>> search = ShareRouting(builder, num_experts=2, steps_per_update=2, seed=0)
    >>> x = np.random.default_rng(0).normal(size=(80, 5)).astype("float32")
    >>> y = {"a": (x[:, :1] > 0).astype("float32"), "b": (x[:, 1:2] > 0).astype("float32")}
    >>> result = search.search(x, y, epochs=2, batch_size=16, verbose=0)
    >>> result.plan.tasks, len(result.history["reward"])
    (('a', 'b'), 1)
    >>> model = result.build()  # the plan's model, to retrain
    """

    builder_class = RoutingModelBuilder

    def __init__(
        self,
        builder,
        num_experts,
        queries="input",
        max_route_size=None,
        policy_learning_rate=0.05,
        baseline_decay=0.9,
        entropy_weight=0.5,
        credit="tasks",
        warmup_epochs=1,
        steps_per_update=10,
        samples_per_update=4,
        validation_batch_size=4096,
        validation_split=0.2,
        metric=None,
        seed=None,
    ):
        super().__init__(builder, seed=seed)
        if builder.per_task_inputs:
            # The weight-sharing supernet reads one input batch for every task.
            raise ValueError(
                "ShareRouting needs a `RoutingModelBuilder` with one input for every "
                "task; per-task inputs are not supported by its search yet. Received: a "
                f"builder with inputs keyed by task {list(builder.input_names)}. Search "
                "with one shared input, then build the plan with a per-task builder."
            )
        self.num_experts = check_positive_int("num_experts", num_experts)
        if queries not in ("input", "all"):
            raise ValueError(
                f"Expected `queries` to be 'input' or 'all'. Received: queries={queries!r}"
            )
        self.queries = queries
        if max_route_size is None:
            max_route_size = self.num_experts
        self.max_route_size = min(
            check_positive_int("max_route_size", max_route_size), self.num_experts
        )
        self.policy_learning_rate = check_positive("policy_learning_rate", policy_learning_rate)
        if (
            isinstance(baseline_decay, bool)
            or not isinstance(baseline_decay, numbers.Real)
            or not 0 <= baseline_decay < 1
        ):
            raise ValueError(
                f"Expected `baseline_decay` in [0, 1). Received: baseline_decay={baseline_decay!r}"
            )
        self.baseline_decay = float(baseline_decay)
        self.entropy_weight = check_non_negative("entropy_weight", entropy_weight)
        if credit not in ("tasks", "global"):
            raise ValueError(
                f"Expected `credit` to be 'tasks' or 'global'. Received: credit={credit!r}"
            )
        self.credit = credit
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, numbers.Integral):
            raise TypeError(
                f"Expected `warmup_epochs` to be an int. Received: warmup_epochs={warmup_epochs!r}"
            )
        if warmup_epochs < 0:
            raise ValueError(
                f"Expected `warmup_epochs` >= 0. Received: warmup_epochs={warmup_epochs}"
            )
        self.warmup_epochs = int(warmup_epochs)
        self.steps_per_update = check_positive_int("steps_per_update", steps_per_update)
        self.samples_per_update = check_positive_int("samples_per_update", samples_per_update)
        self.validation_batch_size = check_positive_int(
            "validation_batch_size", validation_batch_size
        )
        if (
            isinstance(validation_split, bool)
            or not isinstance(validation_split, numbers.Real)
            or not 0 < validation_split < 1
        ):
            raise ValueError(
                "Expected `validation_split` in (0, 1). "
                f"Received: validation_split={validation_split!r}"
            )
        self.validation_split = float(validation_split)
        if metric is not None and not isinstance(metric, keras.metrics.Metric):
            raise TypeError(
                "Expected `metric` to be a `keras.metrics.Metric` instance or None. "
                f"Received: metric={metric!r}"
            )
        self.metric = metric

        num_queries = 1 + (self.num_experts if queries == "all" else 0)
        self._layer_choices = route_choices(self.num_experts, num_queries, self.max_route_size)
        if len(self._layer_choices) > _MAX_CHOICES:
            raise ValueError(
                f"The search space has {len(self._layer_choices)} choices per block, more "
                f"than {_MAX_CHOICES}. Lower `num_experts` or set `max_route_size`. Received: "
                f"num_experts={self.num_experts}, max_route_size={max_route_size}"
            )
        # The same choices in the plan's terms: a gate query is the input or
        # a sub-network of the layer below (query q of the layer is q - 1).
        self.choices = [
            (route, INPUT if query == 0 else query - 1) for route, query in self._layer_choices
        ]
        self.blocks = [
            ("expert", layer, m)
            for layer in range(1, builder.num_layers)
            for m in range(self.num_experts)
        ] + [("tower", t) for t in builder.task_names]
        self._validation = None
        self._rewards = None

    # The search space.

    @staticmethod
    def block_label(block):
        """A readable label of a block: its expert's or tower's layer name."""
        if block[0] == "expert":
            return naming.expert_name(block[1], block[2])
        return naming.head_name(block[1])

    def plan_from_choices(self, choices):
        """The plan made of each block's choice, `{block: index into choices}`."""
        layers = [[([INPUT], INPUT)] * self.num_experts] + [
            [self.choices[choices[("expert", layer, m)]] for m in range(self.num_experts)]
            for layer in range(1, self.builder.num_layers)
        ]
        towers = {t: self.choices[choices[("tower", t)]] for t in self.builder.task_names}
        return RoutingPlan(self.builder.task_names, layers, towers)

    def sample_plan(self, rng=None):
        """A plan drawn uniformly from the search space (`rng`: a numpy Generator)."""
        rng = rng if rng is not None else np.random.default_rng(self.seed)
        return self.plan_from_choices(
            {block: int(rng.integers(len(self.choices))) for block in self.blocks}
        )

    # The search model.

    def build_search_model(self):
        """The compiled weight-sharing supernet, with a `policy_optimizer` attribute."""
        builder = self.builder
        inputs = builder.make_input()
        routes = {}

        def route(block, below):
            queries = [inputs] + (below if self.queries == "all" else [])
            layer = SupernetRoute(
                self.num_experts,
                len(queries),
                choices=self._layer_choices,
                seed=self.seed_for(len(routes)),
                name=naming.supernet_route_name(self.block_label(block)),
            )
            routes[block] = layer
            return layer(queries + below)

        below = [builder.make_expert(0, m)(inputs) for m in range(self.num_experts)]
        for layer in range(1, builder.num_layers):
            below = [
                builder.make_expert(layer, m)(route(("expert", layer, m), below))
                for m in range(self.num_experts)
            ]
        outputs = {t: builder.make_head(t)(route(("tower", t), below)) for t in builder.task_names}
        model = keras.Model(inputs, outputs, name="share_routing_supernet")
        builder.compile(model)
        # An attribute of the model, so its state is saved with the model's
        # weights (and restored by `BackupAndRestore`).
        model.policy_optimizer = keras.optimizers.Adam(self.policy_learning_rate)
        model.policy_optimizer.build([layer.policy_logits for layer in routes.values()])
        return model

    def routes(self, model):
        """`{block: SupernetRoute}` of a search model (also after `.keras` reload)."""
        return {
            block: model.get_layer(naming.supernet_route_name(self.block_label(block)))
            for block in self.blocks
        }

    def derive_plan(self, model):
        """The plan of every block's most probable choice."""
        return self.plan_from_choices(
            {
                block: int(np.argmax(layer.probabilities()))
                for block, layer in self.routes(model).items()
            }
        )

    def details(self, model):
        """The reward's metric per task and the final policies.

        `{"reward_metrics": {task: name}, "choices": [[route, query], ...],
        "probabilities": {...}}`; `probabilities` maps each block's label (`block_label`) to its
        probabilities over `choices`.
        """
        return {
            "reward_metrics": self.reward_metrics(),
            "choices": [[list(route), query] for route, query in self.choices],
            "probabilities": {
                self.block_label(block): layer.probabilities().tolist()
                for block, layer in self.routes(model).items()
            },
        }

    def search_callbacks(self, model):
        return [_PolicyUpdate(self, self.routes(model))]

    # Data.

    def prepare_data(self, x, y, validation_data):
        """Splits off the validation data if needed and keeps it in memory for the reward.

        Also chooses each task's reward metric from its validation targets
        (see `reward_metric`), so targets that fit no metric stop the
        search before it trains.
        """
        if validation_data is None:
            x, y, validation_data = self._split(x, y)
        weights = None
        if _is_dataset(validation_data):
            x_val, y_val = self._materialise(validation_data)
        elif isinstance(validation_data, (list, tuple)) and len(validation_data) in (2, 3):
            x_val, y_val = np.asarray(validation_data[0]), validation_data[1]
            if len(validation_data) == 3 and validation_data[2] is not None:
                weights = validation_data[2]
        else:
            raise ValueError(
                "Expected `validation_data` to be `(x_val, y_val)` or a `tf.data.Dataset`. "
                f"Received: validation_data={validation_data!r}"
            )
        y_val = self._check_targets(x_val, y_val, "the validation targets")
        weights = self._check_weights(x_val, weights)
        if not np.issubdtype(x_val.dtype, np.number) or not np.all(np.isfinite(x_val)):
            raise DataError(
                "Expected finite numbers in the validation inputs the reward is scored on. "
                f"Received inputs of dtype {x_val.dtype}"
                + (
                    f" with {int(np.size(x_val) - np.isfinite(x_val).sum())} NaN or inf values"
                    if np.issubdtype(x_val.dtype, np.number)
                    else ""
                )
            )
        losses = {task.name: task.loss for task in self.builder.tasks}
        self._rewards = {
            t: reward_metric(t, y_val[t], weights[t], losses.get(t), self.metric)
            for t in self.builder.task_names
        }
        self._validation = (x_val, y_val, weights)
        return x, y, validation_data

    def _check_weights(self, x_val, weights):
        """`{task: weights}` of the validation examples (1 where none are given)."""
        tasks = self.builder.task_names
        if weights is None:
            return {t: np.ones(len(x_val), "float32") for t in tasks}
        if not isinstance(weights, dict):
            weights = dict.fromkeys(tasks, weights)
        if set(weights) != set(tasks):
            raise DataError(
                f"Expected validation sample weights keyed by the tasks {list(tasks)}. "
                f"Received keys: {sorted(weights)}"
            )
        checked = {}
        for t in tasks:
            w = np.asarray(weights[t], dtype="float32").reshape(len(x_val), -1)[:, 0]
            if not np.all(np.isfinite(w)) or np.any(w < 0):
                raise DataError(
                    f"Expected finite validation sample weights >= 0 for task {t!r}. "
                    f"Received values in [{np.nanmin(w)}, {np.nanmax(w)}]"
                )
            checked[t] = w
        return checked

    def _split(self, x, y):
        if _is_dataset(x):
            batches = int(x.cardinality())
            if batches < 2:
                raise ValueError(
                    "Pass `validation_data`: a dataset can be split only if it has a known "
                    f"number of batches, at least 2. Received a dataset of cardinality {batches}."
                )
            held_out = min(batches - 1, max(1, round(batches * self.validation_split)))
            return x.take(batches - held_out), None, x.skip(batches - held_out)
        x = np.asarray(x)
        y = self._check_targets(x, y, "`y`")
        held_out = min(len(x) - 1, max(1, round(len(x) * self.validation_split)))
        cut = len(x) - held_out
        return (
            x[:cut],
            {t: v[:cut] for t, v in y.items()},
            (x[cut:], {t: v[cut:] for t, v in y.items()}),
        )

    def _materialise(self, dataset):
        xs, ys = [], {t: [] for t in self.builder.task_names}
        for batch in dataset:
            xs.append(np.asarray(batch[0]))
            if not isinstance(batch[1], dict):
                raise ValueError(
                    "Expected a dataset of `(x, y)` with `y` a dict keyed by task. "
                    f"Received targets of type {type(batch[1]).__name__}"
                )
            for t in ys:
                ys[t].append(np.asarray(batch[1][t]) if t in batch[1] else None)
        ys = {t: np.concatenate(v) for t, v in ys.items() if all(a is not None for a in v)}
        return np.concatenate(xs), ys

    def _check_targets(self, x, y, what):
        tasks = list(self.builder.task_names)
        if not isinstance(y, dict) or set(y) != set(tasks):
            raise ValueError(
                f"Expected {what} to be a dict keyed by the tasks {tasks}. "
                f"Received keys: {sorted(y) if isinstance(y, dict) else type(y).__name__}"
            )
        y = {t: np.asarray(v) for t, v in y.items()}
        for t, v in y.items():
            if len(v) != len(x):
                raise ValueError(
                    f"Expected {len(x)} targets for task {t!r} in {what}, one per input. "
                    f"Received {len(v)}"
                )
        return y

    def make_metric(self, task):
        """A fresh score of `task`'s predictions and its sign (the reward is `sign * score`).

        The given `metric`, else the metric `reward_metric` chose from the
        task's validation targets (known once `search` has started).
        """
        if self.metric is not None:
            return self.metric.__class__.from_config(self.metric.get_config()), 1.0
        if self._rewards is None:
            raise ValueError(
                "The reward metric of each task is chosen from its validation targets. "
                "Call `search` first."
            )
        return _REWARD_METRICS[self._rewards[task]]()

    def reward_metrics(self):
        """`{task: name}`: what the reward scores, per task (after `search` has started).

        `"auc"` for 0/1 targets, `"negative_mean_squared_error"` for
        real-valued targets, or the given `metric`'s name.
        """
        return {
            task: self.metric.name if self.metric is not None else self._rewards[task]
            for task in self.builder.task_names
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_experts": self.num_experts,
                "queries": self.queries,
                "max_route_size": self.max_route_size,
                "policy_learning_rate": self.policy_learning_rate,
                "baseline_decay": self.baseline_decay,
                "entropy_weight": self.entropy_weight,
                "credit": self.credit,
                "warmup_epochs": self.warmup_epochs,
                "steps_per_update": self.steps_per_update,
                "samples_per_update": self.samples_per_update,
                "validation_batch_size": self.validation_batch_size,
                "validation_split": self.validation_split,
                "metric": None
                if self.metric is None
                else keras.saving.serialize_keras_object(self.metric),
            }
        )
        return config


class _PolicyUpdate(keras.callbacks.Callback):
    """The REINFORCE steps of `ShareRouting`'s policies, inside `fit`.

    Every `steps_per_update` training batches after the warm-up, at the end
    of the batch: reads the training state back into the model's variables
    (on JAX, where `fit` keeps it apart during an epoch), scores sampled
    architectures on validation data and updates the policies with the
    model's `policy_optimizer`; `fit` then resumes from the updated
    variables. The draws of an update depend only on the seed, the epoch and
    the batch, so a resumed search repeats them.
    """

    def __init__(self, search, routes):
        super().__init__()
        self.search = search
        self.routes = routes
        self.metrics = {t: search.make_metric(t) for t in search.builder.task_names}
        self.epoch = 0
        self.rewards = []

    def on_train_begin(self, logs=None):
        epochs = (self.params or {}).get("epochs")
        if epochs is not None and self.search.warmup_epochs >= epochs:
            raise ValueError(
                "Expected `epochs` > `warmup_epochs`, or the policies never move. Received: "
                f"epochs={epochs}, warmup_epochs={self.search.warmup_epochs}"
            )

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.rewards = []

    def on_train_batch_end(self, batch, logs=None):
        search = self.search
        if self.epoch < search.warmup_epochs or (batch + 1) % search.steps_per_update:
            return
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()
        self.rewards.append(self._update(batch))

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        layers = list(self.routes.values())
        if self.rewards:
            logs["reward"] = float(np.mean(self.rewards))
            logs["baseline"] = float(
                np.mean([float(keras.ops.convert_to_numpy(layer.baseline)) for layer in layers])
            )
        entropies = []
        for layer in layers:
            p = layer.probabilities()
            entropies.append(float(-(p * np.log(p + 1e-12)).sum()))
        logs["entropy"] = float(np.mean(entropies))

    def _predict(self, x):
        strategy = getattr(self.model, "distribute_strategy", None)
        if strategy is not None and strategy.num_replicas_in_sync > 1:
            # Under tf.distribute `predict_on_batch` returns one copy of the
            # outputs per replica; `predict` splits the batch and joins it.
            return self.model.predict(x, batch_size=len(x), verbose=0)
        return self.model.predict_on_batch(x)

    def _score(self, task, y_true, y_pred, sample_weight):
        y_pred = np.asarray(keras.ops.convert_to_numpy(y_pred))
        if not np.all(np.isfinite(y_pred)):
            raise DivergenceError(
                f"The search diverged in epoch {self.epoch + 1}: the supernet's predictions "
                f"for task {task!r} on the validation data are not finite (scored for a "
                "policy update). Check the data for NaN or inf and try a lower learning rate."
            )
        metric, sign = self.metrics[task]
        metric.reset_state()
        metric.update_state(y_true, y_pred, sample_weight=sample_weight)
        value = sign * float(keras.ops.convert_to_numpy(metric.result()))
        if not np.isfinite(value):
            raise ValueError(
                f"The validation score of task {task!r} is not finite ({value}). Check the "
                "validation targets, or raise `validation_batch_size`."
            )
        return value

    def _probabilities(self):
        """Every block's policy; a `DivergenceError` if a policy is not finite."""
        probabilities = {}
        for block, layer in self.routes.items():
            p = layer.probabilities()
            if not np.all(np.isfinite(p)):
                raise DivergenceError(
                    f"The search diverged in epoch {self.epoch + 1}: the policy of "
                    f"{self.search.block_label(block)!r} is not finite. Check the data for "
                    "NaN or inf and try a lower `policy_learning_rate`."
                )
            probabilities[block] = p
        return probabilities

    def _update(self, batch):
        """One REINFORCE step; returns the mean score of the sampled architectures."""
        search = self.search
        tasks = search.builder.task_names
        seed = None if search.seed is None else [search.seed, self.epoch, batch]
        rng = np.random.default_rng(seed)
        x_val, y_val, w_val = search._validation
        size = min(search.validation_batch_size, len(x_val))
        index = np.sort(rng.choice(len(x_val), size=size, replace=False))
        x = x_val[index]
        y = {t: v[index] for t, v in y_val.items()}
        w = {t: v[index] for t, v in w_val.items()}
        if search.metric is None:
            single = [
                t
                for t in tasks
                if search._rewards[t] == "auc" and np.unique(y[t][w[t] > 0]).size < 2
            ]
            if single:
                raise ValueError(
                    f"The validation batch of this policy update holds a single class for "
                    f"tasks {single}, so their AUC is undefined. Raise `validation_batch_size`."
                )

        probabilities = self._probabilities()
        samples, scores = [], []
        try:
            for _ in range(search.samples_per_update):
                sample = {b: int(rng.choice(len(p), p=p)) for b, p in probabilities.items()}
                for block, layer in self.routes.items():
                    layer.set_choice(sample[block])
                predictions = self._predict(x)
                scores.append({t: self._score(t, y[t], predictions[t], w[t]) for t in tasks})
                samples.append(sample)
        finally:
            for layer in self.routes.values():
                layer.set_choice(None)

        reached = [
            {t: search.plan_from_choices(sample).used_by(t) for t in tasks} for sample in samples
        ]
        gradients, variables = [], []
        for block, layer in self.routes.items():
            p = probabilities[block]
            gradient = np.zeros_like(p)
            rewards = [self._reward(block, score, used) for score, used in zip(scores, reached)]
            credited = [r for r in rewards if r is not None]
            if credited:
                gradient = self._reinforce(layer, p, [s[block] for s in samples], rewards)
            # Entropy bonus: d H / d logits = -p (log p + H).
            log_p = np.log(p + 1e-12)
            gradient -= search.entropy_weight * p * (log_p - (p * log_p).sum())
            gradients.append(keras.ops.convert_to_tensor(-gradient.astype("float32")))
            variables.append(layer.policy_logits)
        _apply_policy_step(self.model, gradients, variables)
        return float(np.mean([np.mean(list(score.values())) for score in scores]))

    def _reward(self, block, score, used):
        """The block's reward in one sampled architecture, or None if it reaches no task."""
        if self.search.credit == "global":
            credited = list(score)
        elif block[0] == "tower":
            credited = [block[1]]
        else:
            credited = [t for t in score if (block[1], block[2]) in used[t]]
        return float(np.mean([score[t] for t in credited])) if credited else None

    def _reinforce(self, layer, p, choices, rewards):
        """The REINFORCE ascent direction of one block; updates its baseline and variance."""
        decay = self.search.baseline_decay
        credited = np.array([r for r in rewards if r is not None])
        baseline = float(keras.ops.convert_to_numpy(layer.baseline))
        variance = float(keras.ops.convert_to_numpy(layer.reward_variance))
        if float(keras.ops.convert_to_numpy(layer.num_updates)) == 0:
            baseline, variance = float(credited.mean()), float(credited.var())
        variance = decay * variance + (1 - decay) * float(((credited - baseline) ** 2).mean())
        gradient = np.zeros_like(p)
        for choice, reward in zip(choices, rewards):
            if reward is None:
                continue
            onehot = np.zeros_like(p)
            onehot[choice] = 1.0
            advantage = (reward - baseline) / (np.sqrt(variance) + _EPSILON)
            gradient += advantage * (onehot - p)  # d log p(choice) / d logits
        gradient /= len(rewards)
        layer.baseline.assign(decay * baseline + (1 - decay) * float(credited.mean()))
        layer.reward_variance.assign(variance)
        layer.num_updates.assign(keras.ops.convert_to_numpy(layer.num_updates) + 1)
        return gradient


def _negative_mean_squared_error():
    return keras.metrics.MeanSquaredError(), -1.0


_REWARD_METRICS = {
    "auc": lambda: (keras.metrics.AUC(), 1.0),
    "negative_mean_squared_error": _negative_mean_squared_error,
}


def _loss_name(loss):
    if isinstance(loss, str):
        return loss
    name = getattr(loss, "name", None) or getattr(loss, "__name__", None)
    return str(name or type(loss).__name__)


def reward_metric(task, targets, sample_weight=None, loss=None, metric=None):
    """The default reward metric of one task of `ShareRouting`, from its validation targets.

    Only the examples with a sample weight > 0 count (so labels masked by
    `keras_branching.datasets.mask_missing` are ignored):

    - targets that are all 0 or 1 (both present): `"auc"`, the area under
      the ROC curve of the task's predictions (`keras.metrics.AUC`);
    - real-valued (float) targets of a task whose loss is not a
      cross-entropy: `"negative_mean_squared_error"`, minus the mean squared
      error of its predictions (higher is better, as for AUC);
    - anything else is an error: targets that are not numbers, NaN or
      inf, integer class labels other than 0/1, float targets of a task
      trained with a cross-entropy (class labels or probabilities), a
      single class. Pass `ShareRouting(metric=...)` for such targets.

    Args:
        task: the task's name (for messages).
        targets: the task's validation targets, an array.
        sample_weight: optional per-example weights (`None`: all count).
        loss: the task's loss (a name, function or `keras.losses.Loss`).
        metric: the user's metric, if any: then no default is chosen and
            only the weights are used.

    Returns:
        `"auc"` or `"negative_mean_squared_error"`, or None when `metric`
        is given.

    Raises:
        DataError: for targets that fit neither default metric, naming the
            task.

    Example:

    >>> import numpy as np
    >>> reward_metric("clicked", np.array([0, 1, 1, 0]))
    'auc'
    >>> reward_metric("price", np.array([1.5, 2.0, 0.3]), loss="mse")
    'negative_mean_squared_error'
    """
    if metric is not None:
        return None
    values = np.asarray(targets)
    if sample_weight is not None and len(values):
        counted = np.asarray(sample_weight).reshape(len(values), -1)[:, 0] > 0
        values = values[counted]
    advice = "Pass `ShareRouting(metric=...)` with a metric for these targets"
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
        raise DataError(
            f"Expected numeric validation targets for task {task!r} (0/1 labels or "
            f"real-valued regression targets). Received targets of dtype {values.dtype}. "
            f"{advice}."
        )
    finite = np.isfinite(values)
    if not np.all(finite):
        raise DataError(
            f"Expected finite validation targets for task {task!r}. Received "
            f"{int(values.size - finite.sum())} NaN or inf values of {values.size}. Mark "
            "missing labels with `keras_branching.datasets.mask_missing` (sample weight 0), "
            f"or {advice[0].lower()}{advice[1:]}."
        )
    if values.size == 0:
        raise DataError(
            f"Expected at least one validation example with a label for task {task!r}. "
            "Received none (every sample weight is 0)."
        )
    classes = np.unique(values)
    if np.all((classes == 0) | (classes == 1)):
        if classes.size < 2:
            raise DataError(
                f"The validation targets of task {task!r} hold a single class "
                f"({classes[0]:g}), so its AUC is undefined. Pass more validation data or "
                "a `metric` for these targets."
            )
        return "auc"
    shown = ", ".join(f"{c:g}" for c in classes[:6]) + (", ..." if classes.size > 6 else "")
    if not np.issubdtype(values.dtype, np.floating):
        raise DataError(
            f"Expected 0/1 labels or real-valued (float) regression targets for task "
            f"{task!r}. Received integer labels with {classes.size} values ({shown}): "
            "AUC needs 0/1 labels. One-hot encode class labels, cast regression targets to "
            f"float, or {advice[0].lower()}{advice[1:]}."
        )
    if loss is not None and "crossentropy" in _loss_name(loss).lower():
        raise DataError(
            f"Expected 0/1 labels for task {task!r}, trained with the loss "
            f"{_loss_name(loss)!r}. Received values other than 0 and 1 ({shown}): AUC needs "
            f"0/1 labels and these are not regression targets. {advice}."
        )
    return "negative_mean_squared_error"


def _apply_policy_step(model, gradients, variables):
    """Applies one policy step with the model's `policy_optimizer`.

    The step is computed once, on the host, from the validation reward. Under
    `tf.distribute` the optimizer must run in a replica context: each replica
    applies its share, which Keras sums back to the whole step.
    """
    strategy = getattr(model, "distribute_strategy", None)
    replicas = getattr(strategy, "num_replicas_in_sync", 1)
    if replicas > 1:
        import tensorflow as tf

        if tf.distribute.in_cross_replica_context():
            shares = [g / replicas for g in gradients]
            strategy.run(lambda: model.policy_optimizer.apply(shares, variables))
            return
    model.policy_optimizer.apply(gradients, variables)
