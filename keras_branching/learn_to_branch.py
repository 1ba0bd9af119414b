"""`LearnToBranch`: search a branching tree with a supernet, then retrain it.

Method 2 of `docs/methods.md` (Guo, Lee, Ulbricht, ICML 2020), end to end:
build the supernet (`keras_branching.supernet.build_supernet`), train its
weights and router logits jointly with `fit` while a `TemperatureSchedule`
anneals the routers, derive the tree (`derive_tree`), and build that tree
as a plain model with the builder, to be trained from scratch.
"""

from keras_branching._validation import check_positive
from keras_branching.builder import BranchedModelBuilder
from keras_branching.callbacks.temperature import TemperatureSchedule
from keras_branching.supernet import check_widths, derive_tree

# Defaults tuned on `synthetic_tasks(2, 2, ...)` with three Dense blocks
# (see docs/methods/learning_to_branch.md): router logits learn 30 times
# faster than Adam's default 1e-3 for the weights; the temperature decays
# from 5 by 0.5% a step to a floor of 0.5.
DEFAULT_ROUTER_LEARNING_RATE = 0.03
DEFAULT_INITIAL_TEMPERATURE = 5.0
DEFAULT_MIN_TEMPERATURE = 0.5
DEFAULT_DECAY_RATE = 0.995


class LearnToBranch:
    """Learning to branch: trains a supernet, derives its tree, builds it.

    Args:
        builder: a `BranchedModelBuilder` (input, blocks, tasks, optimizer).
        widths: nodes per block of the supernet; the last must equal the
            number of tasks (see `build_supernet`).
        router_learning_rate: learning rate of the router logits (the
            weights use the builder's optimizer), > 0.
        temperature_schedule: a `TemperatureSchedule`; the default decays
            the temperature exponentially, 5.0 x 0.995**step, floored at
            0.5.
        seed: optional int seed of the routers' Gumbel noise.
        **compile_kwargs: extra `compile` arguments of the supernet (for
            example `jit_compile=True`).

    Attributes:
        supernet: the supernet of the last `search`.
        history: the `History` of its training.
        tree: the derived `BranchingTree`.

    Raises:
        TypeError, ValueError: for a builder that is not a
            `BranchedModelBuilder`, bad widths or a bad learning rate.

    Example:

    >>> import keras
    >>> from keras_branching.datasets.synthetic import synthetic_tasks
    >>> from keras_branching.task import Task
    >>> x, y, groups = synthetic_tasks(2, 2, num_examples=256, seed=0)
    >>> builder = BranchedModelBuilder(
    ...     (100,), [lambda: keras.layers.Dense(8, activation="relu")] * 3,
    ...     [Task(name, lambda: keras.layers.Dense(1), "mse") for name in y])
    >>> search = LearnToBranch(builder, widths=[1, 2, 4], seed=0)
    >>> tree = search.search(x, y, epochs=1, batch_size=64, verbose=0)
    >>> tree.num_blocks
    3
    >>> model = search.build()  # the derived tree, freshly initialised
    """

    def __init__(
        self,
        builder,
        widths,
        router_learning_rate=DEFAULT_ROUTER_LEARNING_RATE,
        temperature_schedule=None,
        seed=None,
        **compile_kwargs,
    ):
        if not isinstance(builder, BranchedModelBuilder):
            raise TypeError(
                "Expected `builder` to be a `BranchedModelBuilder`. "
                f"Received: builder={builder!r} (of type {type(builder).__name__})"
            )
        self.widths = check_widths(builder, widths)
        check_positive("router_learning_rate", router_learning_rate)
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
        self.builder = builder
        self.router_learning_rate = float(router_learning_rate)
        self.temperature_schedule = temperature_schedule
        self.seed = seed
        self.compile_kwargs = compile_kwargs
        self.supernet = None
        self.history = None
        self.tree = None

    def search(self, x, y, epochs=10, **fit_kwargs):
        """Trains a fresh supernet on `(x, y)` and returns the derived tree.

        Each call starts from a new supernet (new weights, uniform logits)
        and restarts the temperature schedule.

        Args:
            x: inputs, anything `fit` accepts.
            y: targets, a dict keyed by task name (or `None` when `x` is a
                dataset yielding both).
            epochs: training epochs of the supernet.
            **fit_kwargs: other `fit` arguments (`batch_size`, `verbose`,
                `validation_data`, `callbacks`, ...).

        Returns:
            The derived `BranchingTree` (also stored as `self.tree`).
        """
        self.supernet = self.builder.build_supernet(
            self.widths,
            temperature=self.temperature_schedule.initial_temperature,
            router_learning_rate=self.router_learning_rate,
            seed=self.seed,
            **self.compile_kwargs,
        )
        callbacks = list(fit_kwargs.pop("callbacks", None) or [])
        callbacks.append(self.temperature_schedule)
        self.history = self.supernet.fit(x, y, epochs=epochs, callbacks=callbacks, **fit_kwargs)
        self.tree = derive_tree(self.supernet)
        return self.tree

    def build(self, **compile_kwargs):
        """The compiled model of the derived tree, with fresh weights.

        A plain functional model made by `builder.build(tree)`: no router,
        no noise; it exports like any Keras model.

        Raises:
            RuntimeError: if `search` has not been run.
        """
        if self.tree is None:
            raise RuntimeError("No tree yet: call `search(x, y, ...)` before `build()`.")
        return self.builder.build(self.tree, **compile_kwargs)
