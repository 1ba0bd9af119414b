"""`AffinityBranching`: affinity-guided branching (Vandenhende et al., BMVC 2020), as a `Search`.

Train the single-task networks (the builder's independent tree, one model
and one `fit`), measure how alike the tasks represent held-out inputs after
every block (`rsa_affinity` of `branch_point_features`), and pick the
cheapest tree that fits a size budget (`select_tree`). The result is a
`SearchResult` whose plan is that `BranchingTree`.
"""

import math
import numbers
import sys

import keras
import numpy as np

from keras_branching import fusion
from keras_branching.affinity.features import branch_point_features, probe_inputs, task_blocks
from keras_branching.affinity.rsa import rsa_affinity
from keras_branching.affinity.tree_search import (
    DEFAULT_COST,
    _check_cost,
    _resolve_budget,
    _too_small,
    select_tree,
    tree_cost,
)
from keras_branching.builder import BranchedModelBuilder
from keras_branching.search import Search
from keras_branching.tree import BranchingTree


def _is_dataset(data):
    """Whether `data` is a `tf.data.Dataset` (without importing TensorFlow)."""
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(data, tf.data.Dataset)


def _num_examples(data, what, per_task=False):
    """The number of examples of `data`; for per-task inputs (a dict of arrays
    with their own lengths), the fewest any task has."""
    lengths = {len(a) for a in keras.tree.flatten(data)}
    if per_task:
        return min(lengths)
    if len(lengths) != 1:
        raise ValueError(
            f"Expected every array of {what} to have the same number of examples. "
            f"Received lengths {sorted(lengths)}"
        )
    return lengths.pop()


def _take(data, index):
    return keras.tree.map_structure(lambda a: a[index], data)


def _dataset_inputs(dataset):
    """The inputs' part of a dataset's element spec."""
    spec = dataset.element_spec
    return spec[0] if isinstance(spec, tuple) else spec


def _first_inputs(dataset, num_samples, what, per_task=False):
    """The first `num_samples` inputs of a dataset of `(x, y, ...)` batches, as numpy
    (for per-task inputs, the first `num_samples` of every task)."""
    batches, count = [], 0
    for element in dataset.as_numpy_iterator():
        inputs = element[0] if isinstance(element, tuple) else element
        batches.append(inputs)
        count += _num_examples(inputs, what, per_task)
        if count >= num_samples:
            break
    if count < num_samples:
        raise ValueError(
            f"Expected at least {_wanted(num_samples, per_task)} in {what} to measure "
            f"the affinity on. Received: {count}"
        )
    return keras.tree.map_structure(lambda *a: np.concatenate(a)[:num_samples], *batches)


def _wanted(count, per_task, noun="inputs"):
    return f"{count} {noun} per task" if per_task else f"num_samples={count} {noun}"


def _share_initial_weights(model):
    """Gives every task's copy of each block (and head, where shapes match) the first task's.

    The copies are found in the graph (`task_blocks`), the heads as the
    layers that make the model's outputs.
    """
    blocks = task_blocks(model)
    heads = {
        task: model.get_layer(spec[0]) for task, spec in model.get_config()["output_layers"].items()
    }
    first, *others = list(blocks)
    pairs = [(blocks[first][d], [blocks[t][d] for t in others]) for d in range(len(blocks[first]))]
    pairs.append((heads[first], [heads[t] for t in others]))
    for source, targets in pairs:
        weights = source.get_weights()
        for target in targets:
            if [w.shape for w in target.get_weights()] == [w.shape for w in weights]:
                target.set_weights(weights)


class AffinityBranching(Search):
    """Affinity-guided branching: share blocks between tasks that represent alike.

    `search` trains one single-task network per task (the builder's
    independent tree, in one `fit`: a task's loss reaches only its own
    branch), reads every task's features after every block on
    `num_samples` held-out inputs, turns them into task affinities by
    representation similarity analysis, and selects the tree of lowest
    cost whose parameter count fits `budget`.

    The cost: `cost="balanced"` (the default) makes every task a group adds
    beyond its first pay the group's largest dissimilarity, so a budget
    that allows `k` copies of a block goes to `k` groups of alike tasks;
    `cost="paper"` is the paper's mean over groups of their largest
    dissimilarity, where a group of one task costs 0: it prefers one
    group of unlike tasks next to groups of one whenever the alike tasks'
    dissimilarity exceeds `1 / k` (see `tree_cost`, and
    docs/methods/affinity.md for measurements of both).

    Held-out inputs: the first `num_samples` inputs of `validation_data`
    when it is given; otherwise, for arrays, the last `num_samples`
    examples of `x` (and of `y` and any `sample_weight`) are held out of
    training; for a `tf.data.Dataset` `x` without `validation_data`, the
    first `num_samples` inputs it yields (these are also trained on; pass
    `validation_data` to measure on unseen inputs).

    Per-task inputs (a builder whose `inputs` is a dict of shapes, with
    `x` keyed by task: every task has its own examples): the affinity
    compares the tasks' networks on one probe batch, the same `num_samples`
    inputs fed to every task's network. It is pooled from every task
    (`probe_inputs`): each of the `T` tasks gives about `num_samples / T`
    of its held-out inputs, drawn with `seed`. The held-out inputs are
    then taken per task as above, `ceil(num_samples / T)` of every task
    (for a dataset such as `keras_branching.datasets.task_batches` gives,
    from its first batches).

    The returned `SearchResult` has the chosen `BranchingTree` as `plan`
    and, in `details`, `affinity` (`TaskAffinity.to_config()`: rebuild it
    with `TaskAffinity.from_config`), `cost` (`tree_cost` of the plan),
    `size` (its parameter count) and `budget`. After `search`, the trained
    single-task model is `self.model` and the affinity `self.affinity`.

    Args:
        builder: the `BranchedModelBuilder` giving the backbone, tasks and
            heads.
        budget: the largest parameter count of the chosen tree (an int), a
            fraction in [0, 1] (a float) between the fully shared (0) and
            fully independent (1) trees' counts, or None for no limit (then
            the answer is the independent tree).
        num_samples: how many held-out inputs the affinity is measured on
            (the paper uses about 500), >= 3; with per-task inputs, the
            size of the pooled probe batch.
        method: tree search, "exact", "beam" or "auto" (see `select_tree`).
        cost: the tree cost, "balanced" (default) or "paper" (see
            `tree_cost`).
        pooling: None, or "average" to average convolutional features over
            space before comparing them.
        shared_init: start every single-task network from the same weights
            (those of the first task's copy of each block, and of its head
            where the heads have the same shapes), as in the paper, where
            every single-task network starts from one pretrained backbone.
            Different random starts add noise to the affinity: on
            `synthetic_tasks`, two networks trained on the same task reach
            an affinity of only about 0.6 to 0.75 at the last block from
            different starts, 0.98 from the same one.
        seed: optional int; see `Search`.
        fuse: how the single-task networks train: `"auto"` (default) fused
            where `keras_branching.fusion.should_fuse` says so for the
            independent tree (each block depth one `StackedBlock`: faster
            with many tasks and small blocks), True fused, False as
            separate copies. The features are read from the separate form
            (`keras_branching.fusion.unfuse`), so the affinity is the same.

    Raises:
        TypeError: if `builder` is not a `BranchedModelBuilder`, or for a
            `budget` or `seed` of the wrong type.
        ValueError: for `num_samples` < 3, a negative budget, an unknown
            `method`, `cost`, `pooling` or `fuse`.

    Example:

    >>> import keras
    >>> from keras_branching.builder import BranchedModelBuilder
    >>> from keras_branching.datasets.synthetic import synthetic_tasks
    >>> from keras_branching.task import Task
    >>> x, y, groups = synthetic_tasks(2, 2, num_examples=300, input_dim=10)
    >>> builder = BranchedModelBuilder(
    ...     (10,), [lambda: keras.layers.Dense(8, activation="relu")] * 2,
    ...     [Task(t, lambda: keras.layers.Dense(1), "mse") for t in y],
    ... )
    >>> result = AffinityBranching(builder, budget=0.5, num_samples=100, seed=0).search(
    ...     x, y, epochs=1, verbose=0
    ... )
    >>> shared = builder.count_params(builder.shared_tree())
    >>> independent = builder.count_params(builder.independent_tree())
    >>> result.details["size"] <= shared + 0.5 * (independent - shared)
    True
    >>> model = result.build()  # retrain it with model.fit(...)
    """

    builder_class = BranchedModelBuilder

    def __init__(
        self,
        builder,
        budget=None,
        num_samples=500,
        method="auto",
        pooling=None,
        shared_init=True,
        cost=DEFAULT_COST,
        seed=None,
        fuse="auto",
    ):
        super().__init__(builder, seed=seed)
        if not isinstance(fuse, (bool, str)) or fuse not in (True, False, "auto"):
            raise ValueError(
                f'Expected `fuse` to be True, False or "auto". Received: fuse={fuse!r}'
            )
        self.fuse = fuse
        if (
            isinstance(num_samples, bool)
            or not isinstance(num_samples, numbers.Integral)
            or num_samples < 3
        ):
            raise ValueError(
                f"Expected `num_samples` to be an int >= 3. Received: num_samples={num_samples!r}"
            )
        _resolve_budget(budget, 0.0, 1.0)  # type and sign checks
        if method not in ("exact", "beam", "auto"):
            raise ValueError(
                f"Expected `method` to be 'exact', 'beam' or 'auto'. Received: method={method!r}"
            )
        _check_cost(cost)
        if pooling not in (None, "average"):
            raise ValueError(
                f"Expected `pooling` to be None or 'average'. Received: pooling={pooling!r}"
            )
        self.budget = budget
        self.num_samples = int(num_samples)
        self.method = method
        self.pooling = pooling
        self.shared_init = bool(shared_init)
        self.cost = cost
        self.affinity = None
        self._held_out = None
        self._holding_out = False
        self._plan = None

    def min_examples(self, validation_data=None):
        """The fewest training examples `search` accepts.

        Without `validation_data`, the last `num_samples` examples of
        in-memory `x` are held out for the affinity, so `search` needs
        `num_samples + 1` (with per-task inputs, `ceil(num_samples / T) +
        1` of every one of the `T` tasks); with it, 1 (the validation
        inputs must then number at least `num_samples`, or that share of
        every task).

        Args:
            validation_data: the `validation_data` of the call.

        Returns:
            An int.

        Example:

        >>> import keras
        >>> from keras_branching.builder import BranchedModelBuilder
        >>> from keras_branching.task import Task
        >>> builder = BranchedModelBuilder(
        ...     (4,), [lambda: keras.layers.Dense(2)],
        ...     [Task(t, lambda: keras.layers.Dense(1), "mse") for t in "ab"])
        >>> AffinityBranching(builder, num_samples=100).min_examples()
        101
        """
        if validation_data is not None or self._holding_out:
            return 1  # the data left after the hold-out only needs one example
        if self.builder.per_task_inputs:
            return math.ceil(self.num_samples / len(self.builder.task_names)) + 1
        return self.num_samples + 1

    def get_config(self):
        """The search's settings, in JSON types."""
        config = super().get_config()
        config.update(
            budget=self.budget,
            num_samples=self.num_samples,
            method=self.method,
            pooling=self.pooling,
            shared_init=self.shared_init,
            cost=self.cost,
        )
        return config

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
        """Trains the single-task networks, measures the affinity, selects the tree.

        As `Search.search`; the held-out inputs the affinity is measured on
        are chosen as the class docstring says (for arrays without
        `validation_data`, a `sample_weight` in `fit_kwargs` is split with
        `x` and `y`).

        Returns:
            A `SearchResult` (see the class docstring).

        Raises:
            keras_branching.data_checks.DataError: for data that cannot be
                trained on, among them arrays without `validation_data`
                with `num_samples` examples or fewer (see `min_examples`).
            ValueError: with fewer than `num_samples` held-out inputs, or
                a budget below the fully shared tree's size (before any
                training).
        """
        # The held-out split is made here rather than in `prepare_data`, which
        # does not see `sample_weight` (it must be cut with `x` and `y`).
        self.affinity, self._plan = None, None
        self.result, self.model = None, None  # nothing stale if the checks below fail
        self.check_data(x, y, validation_data, fit_kwargs.get("sample_weight"))
        x, y, validation_data, fit_kwargs = self._hold_out(x, y, validation_data, fit_kwargs)
        builder = self.builder
        shared = builder.count_params(builder.shared_tree())
        independent = builder.count_params(builder.independent_tree())
        capacity = _resolve_budget(self.budget, shared, independent)
        if shared > capacity:
            raise _too_small(self.budget, capacity, shared)
        self._holding_out = True
        try:
            return super().search(
                x,
                y,
                validation_data=validation_data,
                epochs=epochs,
                batch_size=batch_size,
                callbacks=callbacks,
                verbose=verbose,
                **fit_kwargs,
            )
        finally:
            self._holding_out = False

    def _hold_out(self, x, y, validation_data, fit_kwargs):
        """Picks the held-out inputs; returns the data `fit` should see."""
        if validation_data is not None:
            if _is_dataset(validation_data):
                per_task, n = self._share(_dataset_inputs(validation_data))
                held = _first_inputs(validation_data, n, "`validation_data`", per_task)
            elif isinstance(validation_data, (tuple, list)) and len(validation_data) in (2, 3):
                x_val = validation_data[0]
                per_task, n = self._share(x_val)
                available = _num_examples(x_val, "`validation_data`", per_task)
                if available < n:
                    raise ValueError(
                        f"Expected at least {_wanted(n, per_task, 'validation inputs')} to "
                        f"measure the affinity on. Received: {available}"
                    )
                held = _take(x_val, slice(0, n))
            else:
                raise ValueError(
                    "Expected `validation_data` to be a tuple (x_val, y_val), "
                    "(x_val, y_val, sample_weight) or a `tf.data.Dataset`. "
                    f"Received: {type(validation_data).__name__}"
                )
            self._held_out = self._probe(held, per_task)
            return x, y, validation_data, fit_kwargs
        if _is_dataset(x):
            per_task, n = self._share(_dataset_inputs(x))
            self._held_out = self._probe(_first_inputs(x, n, "`x`", per_task), per_task)
            return x, y, validation_data, fit_kwargs
        per_task, n = self._share(x)
        available = _num_examples(x, "`x`")
        if available <= n:
            raise ValueError(
                f"Expected more than {_wanted(n, per_task, 'examples')}, to hold out {n} "
                f"{'of every task ' * per_task}for the affinity. Received: {available}; pass "
                "`validation_data` or a smaller `num_samples`."
            )
        cut = available - n
        self._held_out = self._probe(_take(x, slice(cut, None)), per_task)
        x, y = _take(x, slice(0, cut)), _take(y, slice(0, cut))
        if fit_kwargs.get("sample_weight") is not None:
            fit_kwargs = dict(
                fit_kwargs, sample_weight=_take(fit_kwargs["sample_weight"], slice(0, cut))
            )
        return x, y, validation_data, fit_kwargs

    def _share(self, inputs):
        """`(per_task, count)`: whether `inputs` are per task (a dict for a builder
        with per-task inputs), and how many of them (of every task) to hold out."""
        per_task = self.builder.per_task_inputs and isinstance(inputs, dict)
        if not per_task:
            return False, self.num_samples
        return True, math.ceil(self.num_samples / len(self.builder.task_names))

    def _probe(self, held, per_task):
        """The probe batch: the held-out inputs, pooled from every task for per-task inputs."""
        return probe_inputs(held, self.num_samples, seed=self.seed) if per_task else held

    def build_search_model(self):
        """The compiled model of the builder's independent tree (the single-task networks)."""
        tree = self.builder.independent_tree()
        model = self.builder.build(tree, fuse=False)  # fused below, after the weights are shared
        if self.shared_init:
            _share_initial_weights(model)
        if self.fuse is True or (self.fuse == "auto" and fusion.should_fuse(self.builder, tree)):
            model = fusion.fuse(model, self.builder)  # the same weights, trained fused
        return model

    def derive_plan(self, model):
        """The cheapest tree within the budget, from the trained single-task `model`.

        Reads the features on the held-out inputs chosen by `search` and
        sets `self.affinity`.
        """
        if self._held_out is None:
            raise ValueError(
                "No held-out inputs: `derive_plan` reads the inputs `search` set aside; "
                "call `search` first."
            )
        builder = self.builder
        features = branch_point_features(model, self._held_out, pooling=self.pooling)
        self.affinity = rsa_affinity({t: features[t] for t in builder.task_names})
        tree = select_tree(
            self.affinity,
            self.budget,
            size=builder.count_params,
            method=self.method,
            cost=self.cost,
        )
        self._plan = BranchingTree(builder.task_names, tree.partitions)
        return self._plan

    def details(self, model):
        """The affinity (`TaskAffinity.to_config()`), the plan's cost and size, the budget."""
        plan = self._plan if self._plan is not None else self.derive_plan(model)
        return {
            "affinity": self.affinity.to_config(),
            "cost": tree_cost(plan, self.affinity, cost=self.cost),
            "size": self.builder.count_params(plan),
            "budget": self.budget,
        }
