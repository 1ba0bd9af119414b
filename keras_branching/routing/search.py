"""`ShareRouting`: the share-routing search of MTNAS (methods.md, section 3).

Roles, as in keras-tuner: `RoutingPlan` is what to build, `RoutingModelBuilder`
builds it, and `ShareRouting` decides which plan, by training a
weight-sharing supernet and a policy over its routes.
"""

import itertools
import math
import numbers

import keras
import numpy as np
from keras import ops

from keras_branching._validation import check_non_negative
from keras_branching.routing.builder import RoutingModelBuilder
from keras_branching.routing.plan import INPUT, RoutingPlan

_MAX_CHOICES = 4096
_MASKED = -1e9


@keras.saving.register_keras_serializable(package="keras_branching")
class SupernetRoute(keras.layers.Layer):
    """Every candidate route and gate query of one block of the supernet.

    The layer in front of a sub-network (or a tower) in the share-routing
    supernet. It holds one gate kernel and bias per candidate query, over
    all `num_inputs` candidate members, and two non-trainable masks that
    say which architecture is active: `route_mask` (1 for the route's
    members, 0 for the others) and `query_mask` (one-hot over the
    candidate queries). Its output is the gated sum of the members, gates
    being the softmax, over the members only, of the chosen query's
    logits. So every architecture of the search space is one setting of
    the masks, and all of them share the supernet's weights: a member's
    gate column and a sub-network's weights are the same variables in
    every architecture that uses them.

    `ShareRouting` sets the masks with `set_choice` before each training
    step and each evaluation; nothing of this layer goes into the model of
    the searched plan.

    Args:
        num_inputs: number of candidate members (sub-networks below), >= 1.
        num_queries: number of candidate gate queries, >= 1.
        **kwargs: base layer keyword arguments.

    Call arguments:
        inputs: a list of the `num_queries` query tensors (each
            `(batch, features)`), then the `num_inputs` member tensors (one
            shape).

    Returns:
        The gated sum of the active members, of the members' shape.

    Example:

    >>> import numpy as np
    >>> layer = SupernetRoute(num_inputs=3, num_queries=1)
    >>> q = np.ones((2, 4), "float32")
    >>> xs = [np.full((2, 2), float(i), "float32") for i in range(3)]
    >>> _ = layer([q, *xs])
    >>> layer.set_choice(route=(0, 2), query=0)
    >>> np.asarray(layer([q, *xs]))[0]  # zero kernels: mean of members 0 and 2
    array([1., 1.], dtype=float32)
    """

    def __init__(self, num_inputs, num_queries, **kwargs):
        for name, value in (("num_inputs", num_inputs), ("num_queries", num_queries)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"Expected `{name}` to be an int. Received: {name}={value!r}")
            if value < 1:
                raise ValueError(f"Expected `{name}` >= 1. Received: {name}={value}")
        super().__init__(**kwargs)
        self.num_inputs = num_inputs
        self.num_queries = num_queries

    def build(self, input_shapes):
        expected = self.num_queries + self.num_inputs
        if not isinstance(input_shapes, (list, tuple)) or len(input_shapes) != expected:
            raise ValueError(
                f"Expected a list of {expected} tensors ({self.num_queries} queries, then "
                f"{self.num_inputs} members). Received: {input_shapes!r}"
            )
        self.kernels, self.biases = [], []
        for q, shape in enumerate(input_shapes[: self.num_queries]):
            if len(shape) != 2 or shape[-1] is None:
                raise ValueError(
                    f"Expected query {q} to have shape (batch, features). Received: {shape}"
                )
            self.kernels.append(
                self.add_weight(
                    name=f"kernel_{q}", shape=(shape[-1], self.num_inputs), initializer="zeros"
                )
            )
            self.biases.append(
                self.add_weight(name=f"bias_{q}", shape=(self.num_inputs,), initializer="zeros")
            )
        self.route_mask = self.add_weight(
            name="route_mask", shape=(self.num_inputs,), initializer="ones", trainable=False
        )
        self.query_mask = self.add_weight(
            name="query_mask",
            shape=(self.num_queries,),
            initializer=keras.initializers.Constant(1.0 / self.num_queries),
            trainable=False,
        )

    def set_choice(self, route, query):
        """Activates `route` (member indices) gated by candidate query `query` (an index)."""
        route_mask = np.zeros(self.num_inputs, "float32")
        route_mask[list(route)] = 1.0
        query_mask = np.zeros(self.num_queries, "float32")
        query_mask[query] = 1.0
        self.route_mask.assign(route_mask)
        self.query_mask.assign(query_mask)

    def call(self, inputs):
        queries, members = inputs[: self.num_queries], inputs[self.num_queries :]
        query_mask = ops.cast(self.query_mask, "float32")
        logits = 0.0
        for q, (query, kernel, bias) in enumerate(zip(queries, self.kernels, self.biases)):
            term = ops.matmul(ops.cast(query, "float32"), ops.cast(kernel, "float32"))
            logits = logits + query_mask[q] * (term + ops.cast(bias, "float32"))
        active = ops.cast(self.route_mask, "float32") > 0.5
        logits = ops.where(active, logits, _MASKED)
        logits = logits - ops.stop_gradient(ops.max(logits, axis=-1, keepdims=True))
        gates = ops.exp(logits) * ops.cast(active, "float32")
        gates = ops.cast(gates / ops.sum(gates, axis=-1, keepdims=True), members[0].dtype)
        extra_axes = len(members[0].shape) - 2
        output = None
        for m, x in enumerate(members):
            weight = ops.reshape(gates[:, m : m + 1], (-1,) + (1,) * (extra_axes + 1))
            output = weight * x if output is None else output + weight * x
        return output

    def compute_output_shape(self, input_shapes):
        return tuple(input_shapes[self.num_queries])

    def get_config(self):
        config = super().get_config()
        config.update({"num_inputs": self.num_inputs, "num_queries": self.num_queries})
        return config


def auc(y_true, y_score):
    """ROC AUC of 0/1 targets `y_true` and scores `y_score` (ties count one half).

    The default per-task metric of `ShareRouting`. Returns NaN when
    `y_true` holds a single class.
    """
    return _auc(y_true, y_score)


def _auc(y, score):
    y = np.asarray(y).ravel() > 0.5
    score = np.asarray(score, dtype=np.float64).ravel()
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return math.nan
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # ranks from 1, ties averaged
    rank_sum = average_rank[inverse][y].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def _check_positive(name, value, kind=numbers.Real, low=0.0, inclusive=False):
    ok = not isinstance(value, bool) and isinstance(value, kind)
    ok = ok and (value >= low if inclusive else value > low)
    if not ok:
        sign = ">=" if inclusive else ">"
        what = "an int" if kind is numbers.Integral else "a number"
        raise ValueError(f"Expected `{name}` to be {what} {sign} {low}. Received: {name}={value!r}")
    return value


class ShareRouting:
    """Share-routing search (MTNAS; Chen et al., arXiv 2009.00387).

    The search space is `RoutingPlan`s of `len(experts)` layers of
    `num_experts` sub-networks. A *block* is a sub-network of layer 2 or
    later, or a task's tower; each block chooses a route (a non-empty set
    of sub-networks of the layer below) and a gate query (the input, or,
    with `queries="all"`, one sub-network of the layer below). The first
    layer reads the input and has no choice. Each block has an independent
    categorical distribution (softmax of its logits, initially uniform)
    over its choices; a route of one member has no gate, so it is one
    choice, not one per query.

    `search` alternates, as in the paper:

    1. weights: for each training batch, sample an architecture from the
       distributions, set the supernet's masks to it and take one gradient
       step on the training loss (the tasks' losses and weights);
    2. distributions: every `steps_per_update` batches (after
       `warmup_epochs` epochs of weight training under the initial,
       uniform distributions), sample `samples_per_update` architectures,
       score each on one random batch of `validation_batch_size`
       validation examples with `reward` (default: the mean per-task AUC),
       and take one REINFORCE step: the gradient of
       `mean_i (R_i - b) / s log p(a_i)` with respect to the logits, where
       `b` is a moving baseline (an exponential average of past mean rewards
       with decay `baseline_decay`, started at the first mean reward) and
       `s` a moving standard deviation of `R - b` (same decay), applied with
       Adam at `policy_learning_rate`, plus `entropy_weight` times the
       gradient of the distributions' entropy.

    The result is the most probable choice of each block (`plan`), which
    `build()` turns into a fresh model, to retrain from scratch.

    Settings the paper leaves open, and the values chosen here: joint
    (route, query) categorical per block; uniform initial distributions;
    one architecture per training batch; advantages standardised by a
    moving standard deviation, so that the settings below do not depend
    on the metric's scale (AUC differences between architectures are
    small); Adam on the logits, `policy_learning_rate=0.05`,
    `baseline_decay=0.9`, `samples_per_update=4`, `steps_per_update=10`,
    `warmup_epochs=1`; gate kernels start at zero, so a new gate mixes its
    members equally. Two additions against the collapse of the
    distributions onto whichever sub-network trained first (the "Matthew
    effect" of weight-sharing searches), both chosen on the grouped
    synthetic tasks of the tests: per-task credit (`credit="tasks"`) and
    an entropy bonus (`entropy_weight=0.5`). `credit="global",
    entropy_weight=0` is the paper's plain REINFORCE (with standardised
    advantages).

    The weight-sharing supernet is one Keras model: `num_experts`
    sub-networks per layer and, in front of every block, a
    `SupernetRoute` with the gates of every candidate query over every
    candidate member, and masks that select the sampled architecture. It
    lives in `supernet` and never enters the model of the plan.

    Args:
        inputs: a `keras.Input` or a shape tuple; a batch of vectors, since
            gates read it.
        experts: list of zero-argument callables, one per layer, returning
            fresh Keras layers (see `RoutingModelBuilder`).
        tasks: list of `keras_branching.Task`; their heads are the towers.
        num_experts: sub-networks per layer, >= 1.
        queries: `"input"` (every gate is queried by the input) or `"all"`
            (the input or any sub-network of the layer below).
        max_route_size: the largest route considered (default:
            `num_experts`, every non-empty subset).
        optimizer: the weights' optimizer (name or instance), also used
            by `build()`.
        policy_learning_rate: Adam learning rate of the logits, > 0.
        baseline_decay: decay of the moving baseline, in [0, 1).
        entropy_weight: weight of the entropy of the distributions added
            to the REINFORCE objective, >= 0; keeps sampling choices that
            look worse while the weights are still young.
        metric: per-task validation score, `callable(y_true, y_pred) ->
            float` on one task's arrays, higher is better; default `auc`
            (0/1 targets). The reward is the mean of it over tasks.
        credit: `"tasks"` or `"global"`: which tasks' scores reward a
            block's choice. `"global"`: the mean over all tasks, literally
            as in the paper. `"tasks"` (default): the mean over the tasks
            that the block reaches in the sampled architecture (a tower
            reaches its own task; a sub-network the towers that depend on
            it; a block nobody depends on gets no update). A block's choice
            cannot change the other tasks' predictions, so this drops
            their noise from its gradient without biasing it; each task
            has its own moving baseline.
        seed: integer seed of the architecture sampling and batches.

    Example:

    >>> import keras, numpy as np
    >>> from keras_branching.task import Task
    >>> tasks = [
    ...     Task(t, head=lambda: keras.layers.Dense(1, activation="sigmoid"),
    ...          loss="binary_crossentropy")
    ...     for t in ("a", "b")
    ... ]
    >>> search = ShareRouting((5,), [lambda: keras.layers.Dense(4)], tasks, num_experts=2)
    >>> x = np.random.default_rng(0).normal(size=(64, 5)).astype("float32")
    >>> y = {"a": (x[:, :1] > 0).astype("float32"), "b": (x[:, 1:2] > 0).astype("float32")}
    >>> plan = search.search(x, y, (x, y), epochs=2, batch_size=16, steps_per_update=2)
    >>> plan.tasks
    ('a', 'b')
    >>> model = search.build()  # the plan's model, to retrain
    """

    def __init__(
        self,
        inputs,
        experts,
        tasks,
        num_experts,
        queries="input",
        max_route_size=None,
        optimizer="adam",
        policy_learning_rate=0.05,
        baseline_decay=0.9,
        entropy_weight=0.5,
        metric=None,
        credit="tasks",
        seed=0,
    ):
        self.builder = RoutingModelBuilder(inputs, experts, tasks, optimizer=optimizer)
        self.num_experts = _check_positive("num_experts", num_experts, numbers.Integral)
        if queries not in ("input", "all"):
            raise ValueError(
                f"Expected `queries` to be 'input' or 'all'. Received: queries={queries!r}"
            )
        self.queries = queries
        if max_route_size is None:
            max_route_size = num_experts
        _check_positive("max_route_size", max_route_size, numbers.Integral)
        self.max_route_size = min(int(max_route_size), num_experts)
        self.policy_learning_rate = float(
            _check_positive("policy_learning_rate", policy_learning_rate)
        )
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
        if metric is not None and not callable(metric):
            raise TypeError(
                "Expected `metric` to be a callable (y_true, y_pred) -> float. "
                f"Received: {metric!r}"
            )
        self.metric = metric or auc
        if credit not in ("tasks", "global"):
            raise ValueError(
                f"Expected `credit` to be 'tasks' or 'global'. Received: credit={credit!r}"
            )
        self.credit = credit
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"Expected `seed` to be an int. Received: seed={seed!r}")
        self.seed = int(seed)

        self.choices = self._enumerate_choices()
        self.logits = {name: np.zeros(len(c)) for name, c in self.choices.items()}
        self._adam = {
            name: (np.zeros(len(c)), np.zeros(len(c))) for name, c in self.choices.items()
        }
        self._adam_step = 0
        self.baseline = None
        self._spread = None
        self.history = []
        self.supernet = None
        self.plan = None
        self._routes = {}

    # The search space.

    @property
    def num_layers(self):
        return self.builder.num_layers

    def _block_names(self):
        experts = [
            f"expert_{d + 1}_{m}"
            for d in range(1, self.num_layers)
            for m in range(self.num_experts)
        ]
        return experts + [f"tower_{t}" for t in self.builder.task_names]

    def _enumerate_choices(self):
        members = range(self.num_experts)
        query_options = [INPUT] + (list(members) if self.queries == "all" else [])
        choices = []
        for size in range(1, self.max_route_size + 1):
            for route in itertools.combinations(members, size):
                # A route of one member has no gate: one choice, not one per query.
                for query in query_options if size > 1 else [INPUT]:
                    choices.append((route, query))
        if len(choices) > _MAX_CHOICES:
            raise ValueError(
                f"The search space has {len(choices)} choices per block, more than "
                f"{_MAX_CHOICES}. Lower `num_experts` or set `max_route_size`. Received: "
                f"num_experts={self.num_experts}, max_route_size={self.max_route_size}"
            )
        return {name: list(choices) for name in self._block_names()}

    def probabilities(self):
        """Each block's distribution over its choices (`self.choices[block]`), a dict."""
        return {name: _softmax(z) for name, z in self.logits.items()}

    def most_probable_plan(self):
        """The plan made of every block's most probable choice."""
        return self._plan({name: int(np.argmax(z)) for name, z in self.logits.items()})

    def _plan(self, sample):
        first = [([INPUT], INPUT)] * self.num_experts
        layers = [first] + [
            [
                self.choices[f"expert_{d + 1}_{m}"][sample[f"expert_{d + 1}_{m}"]]
                for m in range(self.num_experts)
            ]
            for d in range(1, self.num_layers)
        ]
        towers = {
            t: self.choices[f"tower_{t}"][sample[f"tower_{t}"]] for t in self.builder.task_names
        }
        return RoutingPlan(self.builder.task_names, layers, towers)

    def sample_plan(self, rng=None):
        """A plan drawn from the current distributions (uniform before `search`)."""
        return self._plan(self._sample(rng or np.random.default_rng(self.seed)))

    def _sample(self, rng):
        return {name: int(rng.choice(len(p), p=p)) for name, p in self.probabilities().items()}

    # The supernet.

    def build_supernet(self):
        """The weight-sharing supernet (built once, then reused), compiled."""
        if self.supernet is not None:
            return self.supernet
        builder = self.builder
        inputs = builder.make_input()
        below = [builder.make_expert(0, m)(inputs) for m in range(self.num_experts)]
        self._routes = {}

        def route(name, below):
            queries = [inputs] + (below if self.queries == "all" else [])
            layer = SupernetRoute(self.num_experts, len(queries), name=f"route_{name}")
            self._routes[name] = layer
            return layer(queries + below)

        for d in range(1, self.num_layers):
            below = [
                builder.make_expert(d, m)(route(f"expert_{d + 1}_{m}", below))
                for m in range(self.num_experts)
            ]
        outputs = {t: builder.make_head(t)(route(f"tower_{t}", below)) for t in builder.task_names}
        self.supernet = builder.compile(keras.Model(inputs, outputs, name="share_routing_supernet"))
        return self.supernet

    def _activate(self, sample):
        for name, index in sample.items():
            route, query = self.choices[name][index]
            self._routes[name].set_choice(route, 0 if query == INPUT else 1 + query)

    # The search.

    def search(
        self,
        x,
        y,
        validation_data,
        epochs=10,
        batch_size=256,
        warmup_epochs=1,
        steps_per_update=10,
        samples_per_update=4,
        validation_batch_size=4096,
        verbose=0,
    ):
        """Trains the supernet and the distributions; returns the most probable plan.

        Args:
            x: training inputs, an array.
            y: training targets, a dict keyed by task.
            validation_data: `(x_val, y_val)`, scored by `reward`.
            epochs: passes over the training data, >= 1.
            batch_size: training batch size.
            warmup_epochs: epochs of weight training before the first
                distribution update (>= 0, < epochs).
            steps_per_update: training batches between distribution updates.
            samples_per_update: architectures scored per update (>= 1).
            validation_batch_size: validation examples per update (a random
                batch, the same for all architectures of the update).
            verbose: 1 prints one line per epoch.

        Returns:
            The most probable `RoutingPlan`, also kept in `plan`.
        """
        for name, value in (
            ("epochs", epochs),
            ("batch_size", batch_size),
            ("steps_per_update", steps_per_update),
            ("samples_per_update", samples_per_update),
            ("validation_batch_size", validation_batch_size),
        ):
            _check_positive(name, value, numbers.Integral)
        _check_positive("warmup_epochs", warmup_epochs, numbers.Integral, inclusive=True)
        if warmup_epochs >= epochs:
            raise ValueError(
                "Expected `warmup_epochs` < `epochs`, or the distributions never move. "
                f"Received: warmup_epochs={warmup_epochs}, epochs={epochs}"
            )
        y = self._check_targets(x, y, "y")
        if not isinstance(validation_data, (list, tuple)) or len(validation_data) != 2:
            raise ValueError(
                "Expected `validation_data` to be a pair (x_val, y_val). "
                f"Received: {validation_data!r}"
            )
        x_val, y_val = validation_data
        y_val = self._check_targets(x_val, y_val, "validation_data[1]")

        model = self.build_supernet()
        rng = np.random.default_rng(self.seed)
        n, n_val = len(x), len(x_val)
        steps = math.ceil(n / batch_size)
        step = 0
        for epoch in range(epochs):
            order = rng.permutation(n)
            rewards, losses = [], []
            for s in range(steps):
                index = order[s * batch_size : (s + 1) * batch_size]
                self._activate(self._sample(rng))
                logs = model.train_on_batch(
                    x[index], {t: v[index] for t, v in y.items()}, return_dict=True
                )
                losses.append(logs["loss"])
                step += 1
                if epoch >= warmup_epochs and step % steps_per_update == 0:
                    batch = rng.choice(n_val, size=min(validation_batch_size, n_val), replace=False)
                    rewards.extend(
                        self._update(
                            rng,
                            x_val[batch],
                            {t: v[batch] for t, v in y_val.items()},
                            samples_per_update,
                        )
                    )
            entropy = float(
                np.mean([-(p * np.log(p + 1e-12)).sum() for p in self.probabilities().values()])
            )
            record = {
                "epoch": epoch + 1,
                "loss": float(np.mean(losses)),
                "mean_reward": float(np.mean(rewards)) if rewards else math.nan,
                "baseline": math.nan
                if self.baseline is None
                else float(np.mean(list(self.baseline.values()))),
                "mean_entropy": entropy,
            }
            self.history.append(record)
            if verbose:
                print(
                    ", ".join(
                        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in record.items()
                    )
                )
        self.plan = self.most_probable_plan()
        return self.plan

    def _check_targets(self, x, y, name):
        if not isinstance(y, dict) or set(y) != set(self.builder.task_names):
            raise ValueError(
                f"Expected `{name}` to be a dict keyed by the tasks "
                f"{list(self.builder.task_names)}. "
                f"Received keys: {list(y) if isinstance(y, dict) else type(y).__name__}"
            )
        y = {t: np.asarray(v) for t, v in y.items()}
        for t, v in y.items():
            if len(v) != len(x):
                raise ValueError(
                    f"Expected {len(x)} targets for task {t!r} in `{name}`, one per input. "
                    f"Received {len(v)}"
                )
        return y

    def _predict(self, x):
        """The supernet's outputs on one batch, on one device or under a strategy."""
        if self.supernet.distribute_strategy.num_replicas_in_sync > 1:
            # Under tf.distribute `predict_on_batch` returns one copy of the
            # outputs per replica; `predict` splits the batch and joins it.
            return self.supernet.predict(x, batch_size=len(x), verbose=0)
        return self.supernet.predict_on_batch(x)

    def _update(self, rng, x_val, y_val, num_samples):
        """One REINFORCE step from `num_samples` architectures; returns their mean rewards."""
        tasks = self.builder.task_names
        samples, scores = [], []
        for _ in range(num_samples):
            sample = self._sample(rng)
            self._activate(sample)
            predictions = self._predict(x_val)
            score = {t: float(self.metric(y_val[t], np.asarray(predictions[t]))) for t in tasks}
            bad = [t for t, v in score.items() if not math.isfinite(v)]
            if bad:
                raise ValueError(
                    f"The validation score of tasks {bad} is not finite (for AUC: the "
                    "validation batch holds a single class). Raise `validation_batch_size` "
                    "or pass a `metric` for these targets."
                )
            samples.append(sample)
            scores.append(score)
        means = {t: float(np.mean([s[t] for s in scores])) for t in tasks}
        if self.baseline is None:
            self.baseline = dict(means)
            self._spread = {t: float(np.var([s[t] for s in scores])) for t in tasks}
        decay = self.baseline_decay
        for t in tasks:  # moving variance of the scores around the baseline
            deviation = np.mean([(s[t] - self.baseline[t]) ** 2 for s in scores])
            self._spread[t] = decay * self._spread[t] + (1 - decay) * float(deviation)
        # Advantage of each sample for each block: the mean, over the tasks
        # the block is credited with, of the task's standardised gain
        # (score - baseline) / moving standard deviation, so that the
        # entropy bonus weighs the same whatever the metric's scale.
        advantages = []
        for sample, score in zip(samples, scores):
            gain = {
                t: (score[t] - self.baseline[t]) / (np.sqrt(self._spread[t]) + 1e-8) for t in tasks
            }
            if self.credit == "global":
                everyone = float(np.mean(list(gain.values())))
                advantages.append(dict.fromkeys(sample, everyone))
                continue
            plan = self._plan(sample)
            reached = {t: plan.used_by(t) for t in tasks}
            advantage = {}
            for name in sample:
                if name.startswith("tower_"):
                    credited = [name[len("tower_") :]]
                else:
                    depth, m = (int(i) for i in name[len("expert_") :].split("_"))
                    credited = [t for t in tasks if (depth - 1, m) in reached[t]]
                advantage[name] = float(np.mean([gain[t] for t in credited])) if credited else 0.0
            advantages.append(advantage)
        self._adam_step += 1
        beta1, beta2, epsilon = 0.9, 0.999, 1e-8
        for name, p in self.probabilities().items():
            gradient = np.zeros_like(p)
            for sample, advantage in zip(samples, advantages):
                onehot = np.zeros_like(p)
                onehot[sample[name]] = 1.0
                gradient += advantage[name] * (onehot - p)  # d log p(choice) / d logits
            gradient /= num_samples
            # Entropy bonus: d H / d logits = -p (log p + H).
            log_p = np.log(p + 1e-12)
            gradient -= self.entropy_weight * p * (log_p - (p * log_p).sum())
            m, v = self._adam[name]
            m = beta1 * m + (1 - beta1) * gradient
            v = beta2 * v + (1 - beta2) * gradient**2
            self._adam[name] = (m, v)
            m_hat = m / (1 - beta1**self._adam_step)
            v_hat = v / (1 - beta2**self._adam_step)
            self.logits[name] = self.logits[name] + self.policy_learning_rate * m_hat / (
                np.sqrt(v_hat) + epsilon
            )
        self.baseline = {t: decay * self.baseline[t] + (1 - decay) * means[t] for t in tasks}
        return [float(np.mean(list(s.values()))) for s in scores]

    def build(self, compile=True, **compile_kwargs):
        """The model of the searched plan, freshly initialised, to retrain.

        Raises:
            RuntimeError: if `search` has not run.
        """
        if self.plan is None:
            raise RuntimeError("No plan yet: call `search(...)` before `build()`.")
        return self.builder.build(self.plan, compile=compile, **compile_kwargs)


def _softmax(z):
    z = np.exp(z - z.max())
    return z / z.sum()
