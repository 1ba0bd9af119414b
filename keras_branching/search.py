"""The search protocol: `Search`, the base every method's driver shares, and `SearchResult`.

Three roles, kept apart as in keras-tuner: a *plan* says what to build
(`BranchingTree`, `RoutingPlan`, `Allocation`), a *builder* turns a plan into
a static Keras model (`build(plan)`, `count_params(plan)`), and a *search*
chooses a plan by training a search model through `model.fit`. Every search
is called the same way,

    result = search.search(x, y, validation_data=None, epochs=..., batch_size=None,
                           callbacks=None, verbose="auto", **fit_kwargs)

and returns a `SearchResult`. A method subclasses `Search` and fills in three
hooks: `build_search_model()`, `derive_plan(model)` and, where it needs them,
`search_callbacks(model)` and `prepare_data(...)`. See
`docs/adding_a_method.md`.
"""

import json
import math
import numbers
import os

import keras
import numpy as np

from keras_branching import data_checks, distributed
from keras_branching.tree import BranchingTree

_PLAN_TYPES = {}
_FORMAT = "keras_branching.SearchResult"
STATE_FILE = "keras_branching_search_state.json"


def register_plan(cls):
    """Class decorator: lets `SearchResult.from_json` rebuild plans of `cls`.

    A plan class needs `to_config()`, `from_config(config)`, equality and a
    `plot(...)`; its class name is stored in the JSON.
    """
    _PLAN_TYPES[cls.__name__] = cls
    return cls


# The tree module stays free of Keras (it is used to price trees without it),
# so its plan is registered here.
register_plan(BranchingTree)


def _plan_from_config(class_name, config):
    if class_name not in _PLAN_TYPES:
        raise ValueError(
            f"Unknown plan type {class_name!r}. Expected one of {sorted(_PLAN_TYPES)}."
        )
    return _PLAN_TYPES[class_name].from_config(config)


def _plain(value):
    """`value` with numpy scalars and arrays turned into JSON types."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def check_seed(seed):
    """`seed` as an int or None; a TypeError for anything else."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"Expected `seed` to be an int or None. Received: seed={seed!r}")
    return int(seed)


def _check_processes_seeded(search):
    """Raises a ValueError if several processes train `search` without a seed.

    Under `keras.distribution` on several processes, each process samples
    the search's architectures (Gumbel noise, masks, routing policies) on
    its own; they draw the same samples only from the same seed.
    """
    processes = distributed.num_processes()
    if processes > 1 and search.seed is None:
        raise ValueError(
            f"{type(search).__name__} runs on {processes} processes: pass the same "
            "`seed` on every process, so that they all sample the same architectures "
            "and choose the same plan. Received: seed=None"
        )


class SearchResult:
    """What a search returns: the plan, the training history and the settings.

    Args:
        plan: the chosen plan (`BranchingTree`, `RoutingPlan` or `Allocation`).
        history: dict of per-epoch lists, like `keras.callbacks.History.history`.
        settings: the search's settings (its `get_config()`), JSON types only.
        method: the search class's name.
        details: method-specific results in JSON types (affinity values,
            tree cost, final probabilities...).
        builder: the builder the plan is for; not serialised.

    Example:

    >>> from keras_branching.tree import BranchingTree
    >>> result = SearchResult(BranchingTree.shared(["a", "b"], 2), {"loss": [1.0, 0.5]})
    >>> again = SearchResult.from_json(result.to_json())
    >>> again.plan == result.plan, again.history
    (True, {'loss': [1.0, 0.5]})
    """

    def __init__(self, plan, history=None, settings=None, method=None, details=None, builder=None):
        if type(plan).__name__ not in _PLAN_TYPES:
            raise TypeError(
                f"Expected a plan (one of {sorted(_PLAN_TYPES)}). "
                f"Received: plan={plan!r} (of type {type(plan).__name__})"
            )
        self.plan = plan
        self.history = {k: [float(v) for v in values] for k, values in (history or {}).items()}
        self.settings = _plain(dict(settings or {}))
        self.method = method
        self.details = _plain(dict(details or {}))
        self.builder = builder

    def build(self, compile=True, builder=None, **compile_kwargs):
        """The static model of the plan, with fresh weights and no search machinery.

        Args:
            compile: whether to compile it (default True).
            builder: the builder to use; needed after `from_json` (the
                builder holds your blocks and tasks, which JSON cannot).
            **compile_kwargs: extra `compile` arguments.
        """
        builder = builder if builder is not None else self.builder
        if builder is None:
            raise ValueError(
                "This result has no builder (it was read from JSON). Pass the builder "
                "the search used: `result.build(builder=...)`."
            )
        return builder.build(self.plan, compile=compile, **compile_kwargs)

    def count_params(self, builder=None):
        """The size of the plan's static model, without building it."""
        builder = builder if builder is not None else self.builder
        if builder is None:
            raise ValueError("Pass the builder: `result.count_params(builder=...)`.")
        return builder.count_params(self.plan)

    def summary(self):
        """A text report: method, plan, size, last epoch's metrics, settings."""
        lines = [f"{self.method or 'Search'} result", "", repr(self.plan)]
        if self.builder is not None:
            lines.append(f"parameters: {self.builder.count_params(self.plan):,}")
        if self.history:
            epochs = max(len(v) for v in self.history.values())
            last = ", ".join(f"{k}={v[-1]:.4g}" for k, v in sorted(self.history.items()) if v)
            lines.append(f"trained {epochs} epochs; last: {last}")
        for key, value in sorted(self.details.items()):
            if not isinstance(value, (dict, list)):
                lines.append(f"{key}: {value}")
        if self.settings:
            lines.append("settings: " + json.dumps(self.settings, sort_keys=True))
        return "\n".join(lines)

    def plot(self, **kwargs):
        """Draws the plan (its own `plot`; keyword arguments pass through)."""
        return self.plan.plot(**kwargs)

    def to_json(self):
        """Plan, history, settings and details as a JSON string."""
        return json.dumps(
            {
                "format": _FORMAT,
                "version": 1,
                "method": self.method,
                "plan": {"class_name": type(self.plan).__name__, "config": self.plan.to_config()},
                "history": self.history,
                "settings": self.settings,
                "details": self.details,
            }
        )

    @classmethod
    def from_json(cls, text, builder=None):
        """The result written by `to_json`; `builder` is optional (see `build`)."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"Expected JSON written by `SearchResult.to_json`. Received: {text!r}")
        plan = _plan_from_config(data["plan"]["class_name"], data["plan"]["config"])
        return cls(
            plan,
            data.get("history"),
            data.get("settings"),
            data.get("method"),
            data.get("details"),
            builder,
        )

    def __repr__(self):
        return f"SearchResult(method={self.method!r}, plan={self.plan!r})"


class DivergenceError(RuntimeError):
    """A search's loss or weights became non-finite; no plan is returned."""


class _DivergenceGuard(keras.callbacks.Callback):
    """Stops a search with a clear error when its loss or weights are not finite.

    It checks at the end of every epoch (it runs before the other callbacks,
    so a `BackupAndRestore` never saves a diverged epoch) and once more when
    training ends, after every other callback has run, so no plan is ever
    derived from non-finite weights.
    """

    def on_epoch_end(self, epoch, logs=None):
        self._last_epoch = epoch
        self._check(epoch, logs)

    def on_train_end(self, logs=None):
        self._check(getattr(self, "_last_epoch", 0), None)

    def _check(self, epoch, logs):
        bad = [k for k, v in (logs or {}).items() if not math.isfinite(float(np.mean(v)))]
        if bad:
            raise DivergenceError(
                f"The search diverged in epoch {epoch + 1}: {', '.join(sorted(bad))} not "
                "finite. Check the data for NaN or inf and try a lower learning rate."
            )
        for variable in self.model.variables:
            value = keras.ops.convert_to_numpy(variable)
            if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
                raise DivergenceError(
                    f"The search diverged in epoch {epoch + 1}: variable {variable.path!r} "
                    "is not finite although the reported loss is. Check the data for NaN "
                    "or inf and try a lower learning rate."
                )


def _seed_generators(model):
    """Every `keras.random.SeedGenerator` of `model`, in a fixed order."""
    return [
        generator
        for layer in model._flatten_layers(include_self=True, recursive=True)
        for generator in getattr(layer, "_seed_generators", [])
    ]


class _SearchStateBackup(keras.callbacks.Callback):
    """What `keras.callbacks.BackupAndRestore` does not keep: history and noise.

    Keras restores the weights, the optimizer and the epoch, but starts a new
    `History` and does not save seed generators. After every epoch this
    callback writes the history and every seed generator's state next to the
    backup; on resume it prepends the epochs already done (so each epoch
    appears once) and puts every sampler's noise where an uninterrupted
    search would have it. Under several processes only process 0 writes
    the file (every process holds the same state); every process reads it,
    so the backup directory must be one they all see.
    """

    def __init__(self, backup_dir):
        super().__init__()
        self.path = os.path.join(backup_dir, STATE_FILE)
        self.history = {}

    def on_train_begin(self, logs=None):
        done = getattr(self.model, "_initial_epoch", None) or 0
        self.history = {}
        if not done or not os.path.exists(self.path):
            return
        with open(self.path) as f:
            saved = json.load(f)
        self.history = {k: list(v)[:done] for k, v in saved["history"].items()}
        generators = _seed_generators(self.model)
        if len(generators) == len(saved["seed_states"]):
            for generator, state in zip(generators, saved["seed_states"]):
                generator.state.assign(np.asarray(state, dtype=generator.state.dtype))

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(np.mean(value)))
        if distributed.is_chief() and os.path.isdir(os.path.dirname(self.path)):
            states = [
                keras.ops.convert_to_numpy(g.state).tolist() for g in _seed_generators(self.model)
            ]
            with open(self.path, "w") as f:
                json.dump({"history": self.history, "seed_states": states}, f)


class Search:
    """The base of every search driver: one loop, through `model.fit`.

    Subclasses set `builder_class` and implement `build_search_model` and
    `derive_plan`; they may add `search_callbacks`, `prepare_data`,
    `details`, `min_examples` and extend `get_config`.

    Args:
        builder: the builder of the method's plans (an instance of
            `builder_class`).
        seed: optional int. When given, `search` calls
            `keras.utils.set_random_seed(seed)` before building the search
            model (so every block's initial weights are reproducible) and
            derives every sampler's seed from it; with `None` nothing is
            seeded.

    Attributes:
        model: the search model of the last `search` call (set before
            training starts, so it is the failed run's model when a call
            fails), or None.
        result: the `SearchResult` of the last `search` call, or None when
            that call failed: a failed call never leaves an earlier plan.
    """

    builder_class = None

    def __init__(self, builder, seed=None):
        if self.builder_class is not None and not isinstance(builder, self.builder_class):
            raise TypeError(
                f"Expected `builder` to be a `{self.builder_class.__name__}`. "
                f"Received: builder={builder!r} (of type {type(builder).__name__})"
            )
        self.builder = builder
        self.seed = check_seed(seed)
        self.model = None
        self.result = None

    def seed_for(self, offset):
        """The seed of the `offset`-th sampler (None when `seed` is None)."""
        return None if self.seed is None else self.seed + int(offset)

    # Hooks.

    def build_search_model(self):
        """The compiled model that `search` trains with `fit`."""
        raise NotImplementedError

    def derive_plan(self, model):
        """The plan read from the trained search model."""
        raise NotImplementedError

    def search_callbacks(self, model):
        """Callbacks the method itself needs during `fit` (temperature, policy...)."""
        return []

    def prepare_data(self, x, y, validation_data):
        """`(x, y, validation_data)` as `fit` should see them (for example split off)."""
        return x, y, validation_data

    def details(self, model):
        """Method-specific results to keep in the `SearchResult` (JSON types)."""
        return {}

    def min_examples(self, validation_data=None):
        """The fewest training examples `search` accepts (default 1).

        Override it in a method that needs more. It is applied to in-memory
        `x` as `search` receives it (before `prepare_data`); a dataset's
        size is not known up front, so only an empty one is rejected.

        Args:
            validation_data: the `validation_data` of the call (a method may
                need fewer training examples when it is given).
        """
        del validation_data
        return 1

    def check_data(self, x, y=None, validation_data=None, sample_weight=None, min_examples=None):
        """Checks the data before any training (`keras_branching.data_checks.check_data`).

        `search` calls it first, before `prepare_data`, on the data it was
        given. A subclass that transforms the data before calling
        `Search.search` (e.g. holds some out) should call it first itself.

        Args:
            x, y, validation_data, sample_weight: as for `fit`.
            min_examples: the fewest examples of `x`; `None` asks the
                `min_examples` hook.

        Raises:
            keras_branching.data_checks.DataError: for `y` not keyed by
                exactly `builder.task_names`, lengths that differ, fewer
                than `min_examples` examples, or NaN/inf values.
        """
        if min_examples is None:
            min_examples = self.min_examples(validation_data)
        data_checks.check_data(
            x,
            y,
            list(self.builder.task_names),
            sample_weight=sample_weight,
            validation_data=validation_data,
            min_examples=min_examples,
            who=type(self).__name__,
        )

    def get_config(self):
        """The search's settings, in JSON types."""
        return {"seed": self.seed}

    # The loop.

    def search(
        self,
        x,
        y=None,
        validation_data=None,
        epochs=1,
        batch_size=None,
        callbacks=None,
        verbose="auto",
        **fit_kwargs,
    ):
        """Trains the search model with `fit` and returns a `SearchResult`.

        Args:
            x: inputs (an array, a dict of arrays keyed by input) or a
                `tf.data.Dataset` of `(x, y_dict)`.
            y: targets, a dict keyed by task name (`None` for a dataset).
            validation_data: `(x_val, y_val)` or a dataset, as for `fit`.
            epochs: training epochs of the search model.
            batch_size: as for `fit`.
            callbacks: your Keras callbacks; they run with the method's
                own. Include `keras.callbacks.BackupAndRestore(backup_dir)`
                to resume an interrupted search: the next call with the same
                callback continues from the last completed epoch, and the
                result's history holds every epoch once.
            verbose: as for `fit`.
            **fit_kwargs: any other `fit` argument.

        Returns:
            A `SearchResult`.

        Raises:
            keras_branching.data_checks.DataError: for data that cannot be
                trained on, before any training (see `check_data`).
            ValueError: under several processes (`keras.distribution` on
                JAX) without a `seed`: every process must sample the same
                architectures.
            DivergenceError: if the loss or any weight becomes non-finite.
        """
        _check_processes_seeded(self)
        # A failed call leaves no earlier plan behind: `result` is this
        # call's or None, `model` this call's search model or None.
        self.result = None
        self.model = None
        if self.seed is not None:
            keras.utils.set_random_seed(self.seed)
        # The data as the user gave it, before `prepare_data` reshapes it, so
        # messages name the user's keys.
        self.check_data(x, y, validation_data, fit_kwargs.get("sample_weight"))
        x, y, validation_data = self.prepare_data(x, y, validation_data)
        model = self.build_search_model()
        self.model = model
        user_callbacks = list(callbacks or [])
        backups = [c for c in user_callbacks if isinstance(c, keras.callbacks.BackupAndRestore)]
        history_backup = _SearchStateBackup(backups[0].backup_dir) if backups else None
        # The guard runs first: a diverged epoch raises before a user's
        # `BackupAndRestore` saves it, so the last backup stays a good one.
        all_callbacks = (
            [_DivergenceGuard()]
            + user_callbacks
            + list(self.search_callbacks(model))
            + ([history_backup] if history_backup else [])
        )
        if type(x).__module__.startswith("tensorflow") and "shuffle" not in fit_kwargs:
            # A dataset is shuffled (or not) by its pipeline; Keras warns otherwise.
            fit_kwargs["shuffle"] = False
        history = model.fit(
            x,
            y,
            validation_data=validation_data,
            epochs=epochs,
            batch_size=batch_size,
            callbacks=all_callbacks,
            verbose=verbose,
            **fit_kwargs,
        )
        logged = history_backup.history if history_backup else history.history
        self.result = SearchResult(
            self.derive_plan(model),
            logged,
            settings=self.get_config(),
            method=type(self).__name__,
            details=self.details(model),
            builder=self.builder,
        )
        return self.result
