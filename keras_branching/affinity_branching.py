"""Affinity-guided branching (Vandenhende et al., BMVC 2020), end to end.

Train the single-task networks (the independent tree, in one `fit`),
measure how alike the tasks represent held-out inputs after every block
(`keras_branching.affinity.rsa_affinity`), and pick the cheapest tree that
fits a size budget (`keras_branching.affinity.select_tree`). The result
builds that tree as a compiled model, ready to retrain.
"""

import numbers

import keras

from keras_branching._validation import sanitize_name
from keras_branching.affinity.features import branch_point_features
from keras_branching.affinity.rsa import rsa_affinity
from keras_branching.affinity.search import _resolve_budget, _too_small, select_tree, tree_cost
from keras_branching.builder import BranchedModelBuilder
from keras_branching.tree import BranchingTree


def _num_examples(data):
    lengths = {len(a) for a in keras.tree.flatten(data)}
    if len(lengths) != 1:
        raise ValueError(
            f"Expected every array of the data to have the same number of examples. "
            f"Received lengths {sorted(lengths)}"
        )
    return lengths.pop()


def _take(data, index):
    return keras.tree.map_structure(lambda a: a[index], data)


def _share_initial_weights(model, builder):
    """Gives every task's copy of each block (and head, where shapes match) task 0's weights."""
    first, *others = builder.task_names
    pairs = [
        (builder.block_name(d, (first,)), [builder.block_name(d, (t,)) for t in others])
        for d in range(builder.num_blocks)
    ]
    pairs.append((f"head_{sanitize_name(first)}", [f"head_{sanitize_name(t)}" for t in others]))
    for source_name, target_names in pairs:
        weights = model.get_layer(source_name).get_weights()
        for name in target_names:
            target = model.get_layer(name)
            if [w.shape for w in target.get_weights()] == [w.shape for w in weights]:
                target.set_weights(weights)


class AffinityBranchingResult:
    """What `AffinityBranching.fit` found: the affinity, the tree and its cost and size.

    Attributes:
        affinity: the measured `TaskAffinity` (one matrix per block).
        tree: the chosen `BranchingTree`.
        cost: `tree_cost(tree, affinity)`.
        size: the chosen tree's parameter count (`builder.count_params(tree)`).
        budget: the budget it was chosen under (as given).
        builder: the `BranchedModelBuilder`.
        single_task_model: the trained model of the independent tree.
        history: the `History` of its training.
    """

    def __init__(self, builder, affinity, tree, cost, size, budget, single_task_model, history):
        self.builder = builder
        self.affinity = affinity
        self.tree = tree
        self.cost = cost
        self.size = size
        self.budget = budget
        self.single_task_model = single_task_model
        self.history = history

    def build(self, **compile_kwargs):
        """The compiled model of the chosen tree, freshly initialised, ready to train."""
        return self.builder.build(self.tree, **compile_kwargs)

    def to_config(self):
        """A JSON-serialisable dict of the affinity, the tree, its cost, size and budget."""
        return {
            "affinity": self.affinity.to_config(),
            "tree": self.tree.to_config(),
            "cost": self.cost,
            "size": self.size,
            "budget": self.budget,
        }

    def summary(self):
        """A text report: affinity after the last block, chosen tree, cost and size."""
        shared = self.builder.count_params(self.builder.shared_tree())
        independent = self.builder.count_params(self.builder.independent_tree())
        return "\n".join(
            [
                "Affinity-guided branching",
                "Task affinity (Spearman correlation of RDMs), "
                + self.affinity.format(branch_point=-1),
                "Chosen tree:",
                str(self.tree),
                f"Cost: {self.cost:.4f}",
                f"Size: {self.size:,} parameters (budget {self.budget!r}; fully shared "
                f"{shared:,}, fully independent {independent:,})",
            ]
        )

    def __repr__(self):
        copies = ", ".join(str(k) for k in self.tree.num_copies())
        return (
            f"AffinityBranchingResult(tasks={list(self.tree.tasks)}, copies per block=[{copies}], "
            f"cost={self.cost:.4f}, size={self.size}, budget={self.budget!r})"
        )


class AffinityBranching:
    """Affinity-guided branching: share blocks between tasks that represent alike.

    `fit` trains one single-task network per task (the builder's
    independent tree, in one `fit`: a task's loss reaches only its own
    branch), reads every task's features after every block on
    `num_samples` held-out inputs, turns them into task affinities by
    representation similarity analysis, and selects the tree of lowest
    cost whose parameter count fits `budget`.

    Args:
        builder: the `BranchedModelBuilder` giving the backbone, tasks and
            heads.
        num_samples: how many held-out inputs the affinity is measured on
            (the paper uses about 500), >= 3.
        budget: the largest parameter count of the chosen tree (an int), a
            fraction in [0, 1] (a float) between the fully shared (0) and
            fully independent (1) trees' counts, or None for no limit (then
            the answer is the independent tree).
        method: tree search, "exact", "beam" or "auto" (see `select_tree`).
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
    >>> result = AffinityBranching(builder, num_samples=100, budget=0.5).fit(
    ...     x, y, epochs=1, verbose=0
    ... )
    >>> result.size <= builder.count_params(builder.shared_tree()) + 0.5 * (
    ...     builder.count_params(builder.independent_tree())
    ...     - builder.count_params(builder.shared_tree()))
    True
    >>> model = result.build()  # retrain it with model.fit(...)
    """

    def __init__(
        self,
        builder,
        num_samples=500,
        budget=None,
        method="auto",
        pooling=None,
        shared_init=True,
    ):
        if not isinstance(builder, BranchedModelBuilder):
            raise TypeError(
                "Expected `builder` to be a `BranchedModelBuilder`. "
                f"Received: {builder!r} (of type {type(builder).__name__})"
            )
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
        if pooling not in (None, "average"):
            raise ValueError(
                f"Expected `pooling` to be None or 'average'. Received: pooling={pooling!r}"
            )
        self.builder = builder
        self.num_samples = int(num_samples)
        self.budget = budget
        self.method = method
        self.pooling = pooling
        self.shared_init = bool(shared_init)

    def fit(self, x, y, validation_data=None, epochs=1, **fit_kwargs):
        """Trains the single-task networks, measures the affinity, selects the tree.

        Args:
            x: training inputs (arrays, as `keras.Model.fit` takes them).
            y: training targets, a dict keyed by task name.
            validation_data: `(x_val, y_val)` (or with sample weights), used
                for validation during training; the affinity is measured on
                its first `num_samples` inputs. Without it, the last
                `num_samples` examples of `x` are held out of training and
                used instead.
            epochs: epochs of training of the single-task networks.
            **fit_kwargs: passed to `keras.Model.fit` (`batch_size`,
                `callbacks`, `verbose`, ...).

        Returns:
            An `AffinityBranchingResult`.

        Raises:
            ValueError: with too few examples to hold out `num_samples`, or
                a budget below the fully shared tree's size.
        """
        if "validation_split" in fit_kwargs:
            raise ValueError(
                "`validation_split` is not supported: pass `validation_data`, or "
                "nothing and the last `num_samples` examples are held out."
            )
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError(
                    "Expected `validation_data` to be a tuple (x_val, y_val) or "
                    f"(x_val, y_val, sample_weight). Received: {type(validation_data).__name__}"
                )
            x_val = validation_data[0]
            available = _num_examples(x_val)
            if available < self.num_samples:
                raise ValueError(
                    f"Expected at least num_samples={self.num_samples} validation inputs "
                    f"to measure the affinity on. Received: {available}"
                )
            held_out = _take(x_val, slice(0, self.num_samples))
            x_train, y_train = x, y
        else:
            available = _num_examples(x)
            if available <= self.num_samples:
                raise ValueError(
                    f"Expected more than num_samples={self.num_samples} examples, to hold "
                    f"out {self.num_samples} for the affinity. Received: {available}; pass "
                    "`validation_data` or a smaller `num_samples`."
                )
            cut = available - self.num_samples
            x_train, y_train = _take(x, slice(0, cut)), _take(y, slice(0, cut))
            held_out = _take(x, slice(cut, None))
        builder = self.builder
        # Fail before training when no tree can fit the budget.
        shared = builder.count_params(builder.shared_tree())
        independent = builder.count_params(builder.independent_tree())
        capacity = _resolve_budget(self.budget, shared, independent)
        if shared > capacity:
            raise _too_small(self.budget, capacity, shared)
        model = builder.build(builder.independent_tree())
        if self.shared_init:
            _share_initial_weights(model, builder)
        history = model.fit(
            x_train, y_train, validation_data=validation_data, epochs=epochs, **fit_kwargs
        )
        features = branch_point_features(model, held_out, pooling=self.pooling)
        affinity = rsa_affinity({t: features[t] for t in builder.task_names})
        tree = select_tree(affinity, self.budget, size=builder.count_params, method=self.method)
        tree = BranchingTree(builder.task_names, tree.partitions)
        return AffinityBranchingResult(
            builder=builder,
            affinity=affinity,
            tree=tree,
            cost=tree_cost(tree, affinity),
            size=builder.count_params(tree),
            budget=self.budget,
            single_task_model=model,
            history=history,
        )
