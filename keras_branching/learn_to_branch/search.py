"""`LearnToBranch`: search a branching tree with a supernet.

Method 2 of `docs/methods.md` (Guo, Lee, Ulbricht, ICML 2020): build the
supernet (`build_supernet`), train its weights and router logits jointly
with `fit` while a `TemperatureSchedule` anneals the routers, and derive the
tree (`derive_tree`). The `SearchResult` builds that tree as a plain model,
to be trained from scratch.
"""

import copy

from keras_branching._validation import check_positive
from keras_branching.builder import BranchedModelBuilder
from keras_branching.callbacks.temperature import TemperatureSchedule
from keras_branching.learn_to_branch.supernet import (
    build_supernet,
    check_widths,
    derive_tree,
    router_probabilities,
)
from keras_branching.search import Search

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
        widths: nodes per block of the supernet; the last must equal the
            number of tasks (see `build_supernet`).
        router_learning_rate: learning rate of the router logits (the
            weights use the builder's optimizer), > 0.
        temperature_schedule: a `TemperatureSchedule`; the default decays
            the temperature exponentially, 5.0 x 0.995**step, floored at
            0.5. Each search uses a copy of it; it counts steps with the
            optimizer's `iterations`, so a search resumed by
            `keras.callbacks.BackupAndRestore` continues the annealing.
        seed: optional int: seeds the supernet's initial weights
            (`keras.utils.set_random_seed`) and the routers' Gumbel noise.
        **compile_kwargs: extra `compile` arguments of the supernet (for
            example `jit_compile=True`).

    Raises:
        TypeError, ValueError: for a builder that is not a
            `BranchedModelBuilder`, bad widths, a bad learning rate,
            schedule or seed.

    Example:

    >>> import keras
    >>> from keras_branching.datasets.synthetic import synthetic_tasks
    >>> from keras_branching.task import Task
    >>> x, y, groups = synthetic_tasks(2, 2, num_examples=256, seed=0)
    >>> builder = BranchedModelBuilder(
    ...     (100,), [lambda: keras.layers.Dense(8, activation="relu")] * 3,
    ...     [Task(name, lambda: keras.layers.Dense(1), "mse") for name in y])
    >>> search = LearnToBranch(builder, widths=[1, 2, 4], seed=0)
    >>> result = search.search(x, y, epochs=1, batch_size=64, verbose=0)
    >>> result.plan.num_blocks
    3
    >>> sorted(result.details["router_probabilities"])
    ['router_block2', 'router_block3']
    >>> model = result.build()  # the derived tree, freshly initialised
    """

    builder_class = BranchedModelBuilder

    def __init__(
        self,
        builder,
        widths,
        router_learning_rate=DEFAULT_ROUTER_LEARNING_RATE,
        temperature_schedule=None,
        seed=None,
        **compile_kwargs,
    ):
        super().__init__(builder, seed=seed)
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
        return build_supernet(
            self.builder,
            self.widths,
            temperature=self.temperature_schedule.initial_temperature,
            router_learning_rate=self.router_learning_rate,
            seed=self.seed_for(0),
            **self.compile_kwargs,
        )

    def search_callbacks(self, model):
        """A fresh copy of the temperature schedule."""
        return [copy.copy(self.temperature_schedule)]

    def derive_plan(self, model):
        """The tree the supernet has learned (see `derive_tree`)."""
        return derive_tree(model)

    def details(self, model):
        """`{"router_probabilities": {router name: probabilities}}`."""
        return {"router_probabilities": router_probabilities(model)}

    def get_config(self):
        """The search's settings, in JSON types."""
        config = super().get_config()
        config.update(
            {
                "widths": list(self.widths),
                "router_learning_rate": self.router_learning_rate,
                "temperature_schedule": _schedule_config(self.temperature_schedule),
                "compile_kwargs": {k: repr(v) for k, v in self.compile_kwargs.items()},
            }
        )
        return config
