"""`BranchingHyperModel`: keras-tuner searches over branching trees.

keras-tuner keeps three roles apart, and so does this module: the
`BranchingHyperModel` says what to build from a set of hyperparameters (a
tree, a learning rate...); the tuner's oracle (`RandomSearch`,
`BayesianOptimization`, `Hyperband`) decides what to try next; the tuner
runs the trials. The hypermodel meets the library only through
`BranchingTree` and the builder.

Distributed tuning is keras-tuner's: start the same script on several
machines with `KERASTUNER_TUNER_ID` (`"chief"` on the machine that runs the
oracle, `"tuner0"`, `"tuner1"`... on the workers), `KERASTUNER_ORACLE_IP`
and `KERASTUNER_ORACLE_PORT` set; the chief serves the oracle, each worker
builds and trains the trials it is given. See `docs/distributed_trials.md`.
keras-tuner keeps the trial of a worker that dies mid-trial RUNNING for
ever, and its chief waits for it for ever: `TrialWatchdog`, run on the
chief, ends such trials after a timeout.
"""

import math
import numbers
import os
import threading
import time
import warnings

import keras_tuner
import numpy as np

from keras_branching.builder import BranchedModelBuilder
from keras_branching.callbacks.temperature import find_temperature_variables
from keras_branching.tree import BranchingTree


def _check_range(name, value):
    if value is None:
        return None
    ok = (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v > 0
            for v in value
        )
        and value[0] <= value[1]
    )
    if not ok:
        raise ValueError(
            f"Expected `{name}` to be None or a pair `(low, high)` with "
            f"0 < low <= high. Received: {name}={value!r}"
        )
    return (float(value[0]), float(value[1]))


def _dissimilarity_matrix(dissimilarity, tasks):
    """A `(T, T)` array in the order of `tasks`, from an array or a `TaskAffinity`."""
    if dissimilarity is None:
        positions = np.arange(len(tasks), dtype=float)
        return np.abs(positions[:, None] - positions[None, :])
    if hasattr(dissimilarity, "tasks") and hasattr(dissimilarity, "dissimilarity"):
        order = [list(dissimilarity.tasks).index(t) for t in tasks]
        matrix = np.asarray(dissimilarity.dissimilarity, float).mean(axis=0)
        return matrix[np.ix_(order, order)]
    matrix = np.asarray(dissimilarity, dtype=float)
    if matrix.shape != (len(tasks), len(tasks)) or not np.all(np.isfinite(matrix)):
        raise ValueError(
            f"Expected `dissimilarity` to be a finite ({len(tasks)}, {len(tasks)}) array "
            "in the builder's task order, or a `TaskAffinity`. "
            f"Received an array of shape {matrix.shape}"
        )
    return matrix


def _cuts(matrix):
    """`{k: partition into k clusters}` along an average-linkage dendrogram.

    Ties merge the first pair in order, so the result is deterministic. Cuts
    of one dendrogram are nested: the cut into more clusters refines the
    cut into fewer.
    """
    clusters = [[i] for i in range(len(matrix))]
    cuts = {len(clusters): [list(c) for c in clusters]}
    while len(clusters) > 1:
        best = None
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                distance = matrix[np.ix_(clusters[a], clusters[b])].mean()
                if best is None or distance < best[0] - 1e-12:
                    best = (distance, a, b)
        _, a, b = best
        clusters[a] = sorted(clusters[a] + clusters.pop(b))
        cuts[len(clusters)] = [list(c) for c in clusters]
    return cuts


class BranchingHyperModel(keras_tuner.HyperModel):
    """A keras-tuner `HyperModel` whose search space covers branching trees.

    Two ways to describe the trees to try:

    - `trees=[...]`: a list of candidate `BranchingTree`s, for example the
      best few trees of an affinity analysis; the hyperparameter `"tree"`
      is the index of the candidate.
    - otherwise, one hyperparameter `"groups_block{d}"` per block (1-based)
      gives the number of groups at that block, from 1 to `max_groups`.
      The groups are cuts of one average-linkage clustering of the tasks by
      `dissimilarity` (by default the builder's task order, which gives
      contiguous groups), so the cuts are nested and every choice is a
      valid tree. A block never has fewer groups than the block before:
      the effective count is the running maximum of the sampled counts.

    Ordinary hyperparameters come with it: `"learning_rate"` (log scale,
    set on the builder's optimizer), `"temperature"` (the initial value of
    every temperature variable of the model, see
    `keras_branching.callbacks.temperature`, for blocks that contain Gumbel
    layers), and `"weighting"` (a choice among loss-weighting schemes).
    `tree(hp)` returns the tree a set of hyperparameters stands for: read
    the best tree with `hypermodel.tree(tuner.get_best_hyperparameters()[0])`.

    Args:
        builder: a `BranchedModelBuilder`.
        trees: optional list of candidate `BranchingTree`s.
        max_groups: largest number of groups per block (default: the
            number of tasks). Ignored with `trees`.
        dissimilarity: optional `(T, T)` task dissimilarity in the builder's
            task order, or a `TaskAffinity` (its dissimilarity averaged over
            branch points). Ignored with `trees`.
        max_params: optional parameter budget: a trial whose tree has more
            parameters fails (keras-tuner's `FailedTrialError`) without
            training, and candidate trees over it are dropped.
        learning_rate: `(low, high)` range to search on a log scale, or
            `None` to keep the builder's optimizer as it is.
        temperature: `(low, high)` range (log scale) for models with
            temperature variables, or `None`.
        weightings: optional dict `{name: factory}` of loss-weighting
            schemes to choose from; a factory takes the task names and
            returns a `LossWeighting`, or is `None` for the fixed weights.
        **kwargs: `name`, `tunable` of `keras_tuner.HyperModel`.

    Example:

    >>> import keras, keras_tuner
    >>> from keras_branching.builder import BranchedModelBuilder
    >>> from keras_branching.task import Task
    >>> builder = BranchedModelBuilder(
    ...     (4,), [lambda: keras.layers.Dense(8)] * 2,
    ...     [Task(n, lambda: keras.layers.Dense(1), "mse") for n in "abc"])
    >>> hypermodel = BranchingHyperModel(builder)
    >>> hp = keras_tuner.HyperParameters()
    >>> hp.values.update({"groups_block1": 2, "groups_block2": 1})
    >>> hypermodel.tree(hp).groups(1)
    [('a', 'b'), ('c',)]
    """

    def __init__(
        self,
        builder,
        trees=None,
        max_groups=None,
        dissimilarity=None,
        max_params=None,
        learning_rate=(1e-4, 1e-2),
        temperature=None,
        weightings=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(builder, BranchedModelBuilder):
            raise TypeError(
                "Expected `builder` to be a `BranchedModelBuilder`. "
                f"Received: builder={builder!r} (of type {type(builder).__name__})"
            )
        self.builder = builder
        tasks = builder.task_names
        if max_params is not None and (
            isinstance(max_params, bool) or not isinstance(max_params, numbers.Integral)
        ):
            raise TypeError(
                f"Expected `max_params` to be an int. Received: max_params={max_params!r}"
            )
        self.max_params = max_params
        if trees is not None:
            if (
                isinstance(trees, BranchingTree)
                or not isinstance(trees, (list, tuple))
                or not trees
            ):
                raise ValueError(
                    "Expected `trees` to be a non-empty list of `BranchingTree`s. "
                    f"Received: trees={trees!r}"
                )
            for tree in trees:
                builder.check_tree(tree)
            if max_params is not None:
                trees = [t for t in trees if builder.count_params(t) <= max_params]
                if not trees:
                    raise ValueError(f"No candidate tree fits the budget max_params={max_params}.")
            self.trees = list(trees)
            self._cuts = None
        else:
            self.trees = None
            self._cuts = _cuts(_dissimilarity_matrix(dissimilarity, tasks))
        if max_groups is None:
            max_groups = len(tasks)
        if (
            isinstance(max_groups, bool)
            or not isinstance(max_groups, numbers.Integral)
            or not 1 <= max_groups <= len(tasks)
        ):
            raise ValueError(
                f"Expected `max_groups` between 1 and the number of tasks ({len(tasks)}). "
                f"Received: max_groups={max_groups!r}"
            )
        self.max_groups = int(max_groups)
        self.learning_rate = _check_range("learning_rate", learning_rate)
        self.temperature = _check_range("temperature", temperature)
        if weightings is not None:
            if not isinstance(weightings, dict) or not weightings:
                raise ValueError(
                    "Expected `weightings` to be a non-empty dict {name: factory or None}. "
                    f"Received: weightings={weightings!r}"
                )
            for key, factory in weightings.items():
                if not isinstance(key, str) or (factory is not None and not callable(factory)):
                    raise TypeError(
                        "Expected `weightings` to map names to factories (callables taking "
                        f"the task names) or None. Received: {key!r}: {factory!r}"
                    )
        self.weightings = weightings

    def tree(self, hp):
        """The tree that the hyperparameters `hp` stand for."""
        values = hp.values if isinstance(hp, keras_tuner.HyperParameters) else dict(hp)
        if self.trees is not None:
            return self.trees[values["tree"]]
        tasks = self.builder.task_names
        partitions, groups = [], 1
        for block in range(self.builder.num_blocks):
            groups = max(groups, values[f"groups_block{block + 1}"])
            partitions.append([[tasks[i] for i in c] for c in self._cuts[groups]])
        return BranchingTree(tasks, partitions)

    def _declare_tree(self, hp):
        if self.trees is not None:
            hp.Choice("tree", list(range(len(self.trees))))
        else:
            for block in range(self.builder.num_blocks):
                hp.Int(f"groups_block{block + 1}", 1, self.max_groups)
        return self.tree(hp)

    def build(self, hp):
        tree = self._declare_tree(hp)
        if self.max_params is not None and self.builder.count_params(tree) > self.max_params:
            raise keras_tuner.errors.FailedTrialError(
                f"The tree has {self.builder.count_params(tree)} parameters, over the "
                f"budget max_params={self.max_params}: {tree!r}"
            )
        model = self.builder.build(tree, compile=False)
        if self.temperature is not None:
            variables = find_temperature_variables(model)
            if not variables:
                raise ValueError(
                    "`temperature` is searched but the model has no temperature variable "
                    "(no layer follows the temperature protocol). Pass temperature=None."
                )
            value = hp.Float("temperature", *self.temperature, sampling="log")
            for _, variable in variables:
                variable.assign(value)
        if self.weightings is not None:
            factory = self.weightings[hp.Choice("weighting", list(self.weightings))]
            if factory is not None:
                from keras_branching.weighting.model import WeightedModel

                model = WeightedModel(model, factory(self.builder.task_names))
        self.builder.compile(model)
        if self.learning_rate is not None:
            model.optimizer.learning_rate = hp.Float(
                "learning_rate", *self.learning_rate, sampling="log"
            )
        return model


def _is_chief():
    """keras-tuner's rule: an oracle address is set and the tuner id names the chief."""
    return "KERASTUNER_ORACLE_IP" in os.environ and "chief" in os.environ.get(
        "KERASTUNER_TUNER_ID", ""
    )


@keras_tuner.synchronized
def _end_trial_of(oracle, tuner_id, trial, message):
    """Ends `trial`, handed to `tuner_id`, as INVALID; holds the oracle's lock."""
    if oracle.ongoing_trials.get(tuner_id) is not trial:
        return False  # The worker reported in the meantime.
    trial.status = keras_tuner.engine.trial.TrialStatus.INVALID
    trial.message = message
    try:
        # INVALID: keras-tuner retries it if `max_retries_per_trial` allows,
        # else marks it FAILED. `end_trial` also saves the oracle.
        oracle.end_trial(trial)
    finally:
        # `end_trial` may raise (too many consecutive failures) before it
        # lets go of the trial; the chief must not wait for it either way.
        oracle.ongoing_trials.pop(tuner_id, None)
        # The dead worker will ask for no trial: the chief stops waiting for
        # it. A worker restarted with the same id is counted again.
        oracle.tuner_ids.discard(tuner_id)
    return True


class TrialWatchdog:
    """Ends the trials of distributed workers that stopped answering.

    In keras-tuner's distributed mode a worker reports a trial only when it
    ends it. If the worker dies mid-trial (killed, out of memory, machine
    lost), keras-tuner keeps the trial RUNNING for ever and the chief's
    `search()` never returns, since it waits for every worker it has seen.
    Run on the chief, the watchdog checks the oracle's ongoing trials every
    `interval` seconds; a trial handed to a worker more than
    `trial_timeout` seconds ago is ended as INVALID: keras-tuner gives it
    to the next worker that asks for a trial when the oracle's
    `max_retries_per_trial` allows, else records it FAILED, with a message
    naming the worker. The dead worker's id is forgotten, so the chief ends
    when the live workers are done.

    Choose `trial_timeout` well above the longest trial: a slow worker's
    trial is ended too, and if that worker reports later, keras-tuner
    records its result over the FAILED status (with retries, the trial may
    then have run twice). A worker restarted with its old
    `KERASTUNER_TUNER_ID` before the timeout takes its unfinished trial
    back and runs it again (keras-tuner's own behaviour).

    Args:
        oracle: the chief's `keras_tuner.Oracle` (`tuner.oracle`).
        trial_timeout: seconds, > 0: the longest a trial may run.
        interval: seconds between two checks of the thread that `start()`
            runs, > 0.

    Raises:
        TypeError: if `oracle` is not a `keras_tuner.Oracle`.
        ValueError: if `trial_timeout` or `interval` is not a finite
            number > 0 (the message echoes it).

    Example:

    >>> import keras, keras_tuner
    >>> from keras_branching.builder import BranchedModelBuilder
    >>> from keras_branching.task import Task
    >>> builder = BranchedModelBuilder(
    ...     (4,), [lambda: keras.layers.Dense(8)],
    ...     [Task(n, lambda: keras.layers.Dense(1), "mse") for n in "ab"])
    >>> tuner = keras_tuner.RandomSearch(
    ...     BranchingHyperModel(builder), objective="val_loss", max_trials=2,
    ...     directory=getfixture("tmp_path"), project_name="p")
    >>> oracle = tuner.oracle
    >>> oracle.verbose = 0
    >>> trial = oracle.create_trial("tuner0")  # handed to a worker that dies
    >>> watchdog = TrialWatchdog(oracle, trial_timeout=60)
    >>> watchdog.check(now=0.0)
    []
    >>> watchdog.check(now=61.0)
    ['0']
    >>> oracle.trials["0"].status, oracle.ongoing_trials, oracle.tuner_ids
    ('FAILED', {}, set())
    """

    def __init__(self, oracle, trial_timeout, interval=1.0):
        if not isinstance(oracle, keras_tuner.Oracle):
            raise TypeError(
                "Expected `oracle` to be the chief's `keras_tuner.Oracle` (`tuner.oracle`). "
                f"Received: oracle={oracle!r} (of type {type(oracle).__name__})"
            )
        for name, value in (("trial_timeout", trial_timeout), ("interval", interval)):
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ValueError(f"Expected `{name}` > 0 seconds. Received: {name}={value!r}")
        self.oracle = oracle
        self.trial_timeout = float(trial_timeout)
        self.interval = float(interval)
        self._seen = {}  # (tuner_id, trial_id) -> when first seen running
        self._stop = threading.Event()
        self._thread = None

    def check(self, now=None):
        """Ends every trial that has run longer than `trial_timeout`.

        A trial's time counts from the first check that saw it running.

        Args:
            now: the time to check at (`time.monotonic()` seconds); by
                default the current time.

        Returns:
            The ids of the trials ended by this check, in the order ended.
        """
        now = time.monotonic() if now is None else now
        ongoing = dict(self.oracle.ongoing_trials)
        keys = {(tuner_id, trial.trial_id) for tuner_id, trial in ongoing.items()}
        self._seen = {key: seen for key, seen in self._seen.items() if key in keys}
        ended = []
        for tuner_id, trial in ongoing.items():
            seen = self._seen.setdefault((tuner_id, trial.trial_id), now)
            if now - seen <= self.trial_timeout:
                continue
            message = (
                f"Worker {tuner_id!r} sent no result for trial {trial.trial_id} within "
                f"trial_timeout={self.trial_timeout:g} seconds; it is presumed dead."
            )
            if _end_trial_of(self.oracle, tuner_id, trial, message):
                ended.append(trial.trial_id)
                self._seen.pop((tuner_id, trial.trial_id), None)
        return ended

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception as error:  # Keep watching: the chief must not hang.
                warnings.warn(f"TrialWatchdog: {error!r}", RuntimeWarning, stacklevel=1)

    def start(self):
        """Checks every `interval` seconds in a daemon thread; returns `self`."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="TrialWatchdog", daemon=True)
            self._thread.start()
        return self

    def stop(self):
        """Stops the thread that `start()` runs, waiting for its current check."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def watch_trials(tuner, trial_timeout, interval=1.0):
    """Starts a `TrialWatchdog` on the chief of a distributed search.

    Call it on every machine just before `tuner.search(...)`: it does
    nothing on workers and in a search that is not distributed.

    Args:
        tuner: a keras-tuner `Tuner`.
        trial_timeout: seconds, > 0: the longest a trial may run.
        interval: seconds between two checks, > 0.

    Returns:
        The started `TrialWatchdog` on the chief (the process whose
        `KERASTUNER_TUNER_ID` contains `"chief"` while `KERASTUNER_ORACLE_IP`
        is set), else `None`.

    Raises:
        ValueError: as `TrialWatchdog`, on the chief.

    Example:

    >>> import keras, keras_tuner
    >>> from keras_branching.builder import BranchedModelBuilder
    >>> from keras_branching.task import Task
    >>> builder = BranchedModelBuilder(
    ...     (4,), [lambda: keras.layers.Dense(8)],
    ...     [Task(n, lambda: keras.layers.Dense(1), "mse") for n in "ab"])
    >>> tuner = keras_tuner.RandomSearch(
    ...     BranchingHyperModel(builder), objective="val_loss", max_trials=1,
    ...     directory=getfixture("tmp_path"), project_name="p")
    >>> print(watch_trials(tuner, trial_timeout=600))  # not distributed here
    None
    """
    if not _is_chief():
        return None
    return TrialWatchdog(tuner.oracle, trial_timeout, interval=interval).start()


__all__ = ["BranchingHyperModel", "TrialWatchdog", "watch_trials"]
