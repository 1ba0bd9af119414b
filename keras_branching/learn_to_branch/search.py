"""`LearnToBranch`: search a branching tree with a supernet.

Method 2 of `docs/methods.md` (Guo, Lee, Ulbricht, ICML 2020): build the
supernet (`build_supernet`), train its weights and router logits jointly
with `fit` while a `TemperatureSchedule` anneals the routers, and derive the
tree (`derive_tree`). The `SearchResult` builds that tree as a plain model,
to be trained from scratch.
"""

import copy

import keras
import numpy as np

from keras_branching._validation import check_positive
from keras_branching.builder import BranchedModelBuilder
from keras_branching.callbacks.temperature import TemperatureSchedule
from keras_branching.layers.gumbel_router import GumbelRouter
from keras_branching.learn_to_branch.supernet import (
    build_supernet,
    check_widths,
    derive_tree,
    router_probabilities,
)
from keras_branching.search import Search
from keras_branching.tree import BranchingTree

# Defaults tuned on `synthetic_tasks(2, 2, ...)` with three Dense blocks
# (see docs/methods/learning_to_branch.md): router logits learn 30 times
# faster than Adam's default 1e-3 for the weights; the temperature decays
# from 5 by 0.5% a step to a floor of 0.5.
DEFAULT_ROUTER_LEARNING_RATE = 0.03
DEFAULT_INITIAL_TEMPERATURE = 5.0
DEFAULT_MIN_TEMPERATURE = 0.5
DEFAULT_DECAY_RATE = 0.995


def _schedule_config(schedule):
    """The settings of a `TemperatureSchedule`, in JSON types."""
    kind = schedule.schedule
    if callable(kind):
        kind = getattr(kind, "__qualname__", None) or type(kind).__name__
    return {
        "schedule": kind,
        "initial_temperature": schedule.initial_temperature,
        "min_temperature": schedule.min_temperature,
        "decay_rate": schedule.decay_rate,
        "decay_steps": schedule.decay_steps,
        "warmup_steps": schedule.warmup_steps,
    }


class _FrozenRouters(keras.callbacks.Callback):
    """Holds the router logits' learning rate at 0 for the first `epochs` epochs.

    The routers keep sampling (uniformly, from their zero logits), so the
    weights of every node and head are trained on every routing before the
    routers start to choose.
    """

    def __init__(self, epochs, learning_rate):
        super().__init__()
        self.epochs = epochs
        self.router_learning_rate = learning_rate

    def on_epoch_begin(self, epoch, logs=None):
        rate = 0.0 if epoch < self.epochs else self.router_learning_rate
        optimizer = getattr(self.model.optimizer, "architecture_optimizer", None)
        if optimizer is not None and float(optimizer.learning_rate) != rate:
            optimizer.learning_rate = rate


class _HeadsAsLastLayer:
    """A builder seen with its task heads as one more block, copy `t` being task `t`'s head.

    `build_supernet` on this view routes the heads like every other layer
    (the paper's last layer, one node per task), and gives each task an
    identity as its "head". Everything else is the wrapped builder's.
    """

    def __init__(self, builder):
        self._builder = builder

    def __getattr__(self, name):
        return getattr(self._builder, name)

    @property
    def num_blocks(self):
        return self._builder.num_blocks + 1

    def make_block(self, block, copy_index=0, name=None):
        if block < self._builder.num_blocks:
            return self._builder.make_block(block, copy_index=copy_index, name=name)
        head = self._builder.make_head(self._builder.tasks[copy_index])
        if name is not None:
            head.name = name
        return head

    def make_head(self, task):
        return keras.layers.Identity()


class LearnToBranch(Search):
    """Learning to branch: trains a supernet and derives its tree.

    `search(x, y, ...)` builds a fresh supernet (new weights, uniform
    logits), trains it with `fit` while the temperature schedule anneals the
    routers, and returns a `SearchResult` whose plan is the derived
    `BranchingTree`; `result.build()` builds that tree with the builder
    (fresh weights, no router) to be retrained. The result's `details` hold
    every router's final parent probabilities
    (`details["router_probabilities"]`, keyed by router layer name).

    Args:
        builder: a `BranchedModelBuilder` (input, blocks, tasks, optimizer).
        widths: nodes per block of the supernet, one int >= 1 per block.
            With `route_heads=False` the last must equal the number of
            tasks (see `build_supernet`).
        router_learning_rate: learning rate of the router logits (the
            weights use the builder's optimizer), > 0.
        temperature_schedule: a `TemperatureSchedule`; the default decays
            the temperature exponentially, 5.0 x 0.995**step, floored at
            0.5. Each search uses a copy of it; it counts steps with the
            optimizer's `iterations`, so a search resumed by
            `keras.callbacks.BackupAndRestore` continues the annealing.
        route_heads: True (default): the task heads form one more routed
            layer, the paper's last layer of one node per task, so every
            head picks a node of the last block and the last block can be
            grouped (at most `widths[-1]` copies: the widths bound the
            tree's size). False: task `t`'s head reads node `t` of a last
            block of one node per task, so the learned grouping is read
            at the block before it. See docs/methods/learning_to_branch.md.
        seed: optional int: seeds the supernet's initial weights
            (`keras.utils.set_random_seed`) and the routers' Gumbel noise.
        usage_penalty: not in the paper (default 0, the paper's search):
            weight of every router's usage penalty (see `GumbelRouter`),
            which keeps children from crowding onto few parents. A prior
            (use the nodes evenly), not a measure of task fit.
        hard: True (default, the paper's): hard samples with the
            straight-through gradient; False: soft Gumbel-softmax mixing.
        warmup_epochs: not in the paper (default 0): the router logits do
            not learn during the first `warmup_epochs` epochs (their
            learning rate is 0; the routers keep sampling uniformly), so
            the weights of every node and head are trained on every
            routing before the routers choose.
        router_optimizer: optional Keras optimizer (or name) for the
            router logits, copied for each search; it replaces
            `router_learning_rate` (default None: the builder's optimizer
            class at `router_learning_rate`).
        activity_penalty: not in the paper (default 0): an L1 penalty on
            the activations of the nodes every router reads (see
            `GumbelRouter`), meant to make a wide node cost more when it
            serves unrelated tasks.
        **compile_kwargs: extra `compile` arguments of the supernet (for
            example `jit_compile=True`).

    Raises:
        TypeError, ValueError: for a builder that is not a
            `BranchedModelBuilder`, bad widths, a bad learning rate,
            schedule, `route_heads`, seed, `usage_penalty`, `hard` or
            `warmup_epochs`.

    Example:

    >>> import keras
    >>> from keras_branching.datasets.synthetic import synthetic_tasks
    >>> from keras_branching.task import Task
    >>> x, y, groups = synthetic_tasks(2, 2, num_examples=256, seed=0)
    >>> builder = BranchedModelBuilder(
    ...     (100,), [lambda: keras.layers.Dense(8, activation="relu")] * 3,
    ...     [Task(name, lambda: keras.layers.Dense(1), "mse") for name in y])
    >>> search = LearnToBranch(builder, widths=[1, 2, 2], seed=0)
    >>> result = search.search(x, y, epochs=1, batch_size=64, verbose=0)
    >>> result.plan.num_blocks, result.plan.num_copies()[-1] <= 2
    (3, True)
    >>> sorted(result.details["router_probabilities"])  # the last routes the heads
    ['router_block2', 'router_block3', 'router_block4']
    >>> model = result.build()  # the derived tree, freshly initialised
    """

    builder_class = BranchedModelBuilder

    def __init__(
        self,
        builder,
        widths,
        router_learning_rate=DEFAULT_ROUTER_LEARNING_RATE,
        temperature_schedule=None,
        route_heads=True,
        seed=None,
        usage_penalty=0.0,
        hard=True,
        warmup_epochs=0,
        activity_penalty=0.0,
        router_optimizer=None,
        **compile_kwargs,
    ):
        super().__init__(builder, seed=seed)
        if (
            isinstance(warmup_epochs, bool)
            or not isinstance(warmup_epochs, (int, np.integer))
            or warmup_epochs < 0
        ):
            raise ValueError(
                "Expected `warmup_epochs` to be an int >= 0. "
                f"Received: warmup_epochs={warmup_epochs!r}"
            )
        self.warmup_epochs = int(warmup_epochs)
        if not isinstance(hard, bool):
            raise TypeError(f"Expected `hard` to be a bool. Received: hard={hard!r}")
        self.hard = hard
        GumbelRouter(1, usage_penalty=usage_penalty, activity_penalty=activity_penalty)  # checks
        self.usage_penalty = float(usage_penalty)
        self.activity_penalty = float(activity_penalty)
        if router_optimizer is not None:
            keras.optimizers.get(router_optimizer)  # checks it
        self.router_optimizer = router_optimizer
        if not isinstance(route_heads, bool):
            raise TypeError(
                f"Expected `route_heads` to be a bool. Received: route_heads={route_heads!r}"
            )
        self.route_heads = route_heads
        if route_heads:
            self.widths = check_widths(builder, widths, route_heads=True)
        else:
            self.widths = check_widths(builder, widths)
        self.router_learning_rate = check_positive("router_learning_rate", router_learning_rate)
        if temperature_schedule is None:
            temperature_schedule = TemperatureSchedule(
                "exponential",
                initial_temperature=DEFAULT_INITIAL_TEMPERATURE,
                min_temperature=DEFAULT_MIN_TEMPERATURE,
                decay_rate=DEFAULT_DECAY_RATE,
            )
        if not isinstance(temperature_schedule, TemperatureSchedule):
            raise TypeError(
                "Expected `temperature_schedule` to be a `TemperatureSchedule`. "
                f"Received: temperature_schedule={temperature_schedule!r}"
            )
        self.temperature_schedule = temperature_schedule
        self.compile_kwargs = compile_kwargs

    def build_search_model(self):
        """A fresh, compiled supernet (see `build_supernet`)."""
        if self.route_heads:
            builder, widths = (
                _HeadsAsLastLayer(self.builder),
                [*self.widths, len(self.builder.tasks)],
            )
        else:
            builder, widths = self.builder, self.widths
        return build_supernet(
            builder,
            widths,
            temperature=self.temperature_schedule.initial_temperature,
            router_learning_rate=self.router_learning_rate,
            seed=self.seed_for(0),
            usage_penalty=self.usage_penalty,
            activity_penalty=self.activity_penalty,
            router_optimizer=self.router_optimizer,
            hard=self.hard,
            **self.compile_kwargs,
        )

    def search_callbacks(self, model):
        """A fresh copy of the temperature schedule (and the routers' warm-up, if any)."""
        callbacks = [copy.copy(self.temperature_schedule)]
        if self.warmup_epochs:
            rate = self.router_learning_rate
            if self.router_optimizer is not None:
                rate = keras.optimizers.get(self.router_optimizer).get_config()["learning_rate"]
                if not isinstance(rate, (int, float)):
                    raise ValueError(
                        "Expected a router optimizer with a constant learning rate with "
                        f"`warmup_epochs`. Received: learning_rate={rate!r}"
                    )
            callbacks.append(_FrozenRouters(self.warmup_epochs, rate))
        return callbacks

    def derive_plan(self, model):
        """The tree the supernet has learned (see `derive_tree`)."""
        tree = derive_tree(model)
        if self.route_heads:  # drop the heads' layer: one node per task
            tree = BranchingTree(tree.tasks, tree.partitions[:-1])
        return tree

    def details(self, model):
        """`{"router_probabilities": {router name: probabilities}}`."""
        return {"router_probabilities": router_probabilities(model)}

    def get_config(self):
        """The search's settings, in JSON types."""
        config = super().get_config()
        config.update(
            {
                "widths": list(self.widths),
                "route_heads": self.route_heads,
                "usage_penalty": self.usage_penalty,
                "hard": self.hard,
                "warmup_epochs": self.warmup_epochs,
                "activity_penalty": self.activity_penalty,
                "router_optimizer": None
                if self.router_optimizer is None
                else keras.optimizers.serialize(keras.optimizers.get(self.router_optimizer)),
                "router_learning_rate": self.router_learning_rate,
                "temperature_schedule": _schedule_config(self.temperature_schedule),
                "compile_kwargs": {k: repr(v) for k, v in self.compile_kwargs.items()},
            }
        )
        return config
