"""Representation similarity analysis: how alike two tasks' features are.

Step 2 to 4 of affinity-guided branching (Vandenhende et al., BMVC 2020):
for each task and branch point, the representation dissimilarity matrix
(RDM) of its features on K inputs; the affinity of two tasks at a branch
point is the Spearman rank correlation of their RDMs' upper triangles.

numpy and scipy only: nothing here imports Keras or TensorFlow.
"""

import numbers

import numpy as np
from scipy.stats import rankdata

from keras_branching import distributed
from keras_branching.tree import check_task_names


def _as_features(features, what):
    """A float64 (K, F) view of `features`, checked: K >= 3, F >= 1, finite."""
    try:
        array = np.asarray(features, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"Expected {what} to be a numeric array of shape (K, ...). "
            f"Received: {type(features).__name__}"
        ) from error
    if array.ndim < 2:
        raise ValueError(
            f"Expected {what} of shape (K, ...) with at least one feature per "
            f"input. Received: shape={array.shape}"
        )
    if array.shape[0] < 3:
        raise ValueError(
            f"Expected {what} for at least K=3 inputs (an RDM needs 3 to have "
            f"a rank order). Received: shape={array.shape}"
        )
    array = array.reshape(array.shape[0], -1)
    if array.shape[1] == 0:
        raise ValueError(f"Expected {what} with at least one feature. Received: shape=(K, 0)")
    if not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise ValueError(
            f"Expected finite {what}. Received {bad} NaN or infinite values "
            f"in an array of shape {array.shape}"
        )
    return array


def _rdm(array):
    """`rdm` of a checked (K, F) float64 array."""
    centred = array - array.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1)
    constant = norms <= 1e-12 * (1.0 + np.abs(array).max(axis=1))
    unit = np.divide(
        centred,
        norms[:, None],
        out=np.zeros_like(centred),
        where=~constant[:, None],
    )
    correlation = np.clip(unit @ unit.T, -1.0, 1.0)
    np.fill_diagonal(correlation, 1.0)
    return 1.0 - correlation


def rdm(features):
    """Representation dissimilarity matrix of K inputs' features.

    `RDM[a, b] = 1 - Pearson correlation` between the flattened feature
    vectors of inputs `a` and `b`, so it lies in [0, 2] with zeros on the
    diagonal. A constant feature vector (for example all units of a ReLU
    block dead on that input) has no defined correlation; it is given
    correlation 0 with every other input (dissimilarity 1).

    Args:
        features: array of shape `(K, ...)`, the features of K >= 3 inputs.

    Returns:
        A float64 array of shape `(K, K)`.

    Raises:
        ValueError: for fewer than 3 inputs, no features, or NaN/infinite values.

    Example:

    >>> import numpy as np
    >>> m = rdm(np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [3.0, 2.0, 1.0]]))
    >>> np.round(m, 6).tolist()
    [[0.0, 0.0, 2.0], [0.0, 0.0, 2.0], [2.0, 2.0, 0.0]]
    """
    return _rdm(_as_features(features, "`features`"))


class TaskAffinity:
    """Affinities between tasks at every branch point.

    `values[d, i, j]` says how alike tasks `i` and `j` represent the inputs
    at branch point `d` (after block `d + 1`): 1 for the same rank order of
    pairwise dissimilarities, about 0 for unrelated ones.

    Args:
        tasks: the task names, in the order of the matrix rows.
        values: array of shape `(num_branch_points, T, T)`: symmetric,
            finite, within [-1, 1].

    Raises:
        TypeError: if `tasks` is not a list of names.
        ValueError: for a wrong shape, non-finite or out-of-range values or
            a matrix that is not symmetric.

    Example:

    >>> import numpy as np
    >>> affinity = TaskAffinity(["a", "b"], np.array([[[1.0, 0.5], [0.5, 1.0]]]))
    >>> affinity.num_branch_points
    1
    >>> float(affinity.dissimilarity[0, 0, 1])
    0.5
    """

    def __init__(self, tasks, values):
        self._tasks = check_task_names(tasks)
        try:
            values = np.array(values, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise TypeError(
                "Expected `values` to be a numeric array of shape "
                f"(num_branch_points, T, T). Received: {type(values).__name__}"
            ) from error
        t = len(self._tasks)
        if values.ndim != 3 or values.shape[1:] != (t, t) or values.shape[0] < 1:
            raise ValueError(
                "Expected `values` of shape (num_branch_points, T, T) with "
                f"num_branch_points >= 1 and T={t} (the number of tasks). "
                f"Received: shape={values.shape}"
            )
        if not np.all(np.isfinite(values)):
            raise ValueError("Expected finite `values`. Received NaN or infinite values.")
        if np.any(np.abs(values) > 1.0 + 1e-9):
            raise ValueError(
                "Expected `values` within [-1, 1]. "
                f"Received values in [{values.min()}, {values.max()}]"
            )
        asymmetry = np.abs(values - values.transpose(0, 2, 1)).max()
        if asymmetry > 1e-9:
            raise ValueError(
                "Expected symmetric affinity matrices. Received matrices whose "
                f"transposes differ by up to {asymmetry}"
            )
        values = np.clip((values + values.transpose(0, 2, 1)) / 2.0, -1.0, 1.0)
        values.setflags(write=False)
        self._values = values

    @property
    def tasks(self):
        """The task names, as a tuple."""
        return self._tasks

    @property
    def values(self):
        """The affinities, a read-only array of shape `(num_branch_points, T, T)`."""
        return self._values

    @property
    def dissimilarity(self):
        """`1 - values`: 0 for identical representations."""
        return 1.0 - self._values

    @property
    def num_branch_points(self):
        """The number of branch points (blocks)."""
        return self._values.shape[0]

    def __eq__(self, other):
        if not isinstance(other, TaskAffinity):
            return NotImplemented
        return self._tasks == other._tasks and np.array_equal(self._values, other._values)

    __hash__ = None

    def __repr__(self):
        return (
            f"TaskAffinity({len(self._tasks)} tasks, "
            f"{self.num_branch_points} branch points)\n" + self.format()
        )

    def format(self, branch_point=-1, digits=2):
        """The affinity matrix of one branch point as an aligned text table."""
        if isinstance(branch_point, bool) or not isinstance(branch_point, numbers.Integral):
            raise TypeError(
                f"Expected `branch_point` to be an int. Received: branch_point={branch_point!r}"
            )
        n = self.num_branch_points
        if not -n <= branch_point < n:
            raise ValueError(
                f"Expected `branch_point` in [-{n}, {n}). Received: branch_point={branch_point}"
            )
        matrix = self._values[branch_point]
        width = max(max(len(t) for t in self._tasks), digits + 3)
        index = branch_point % n
        lines = [f"branch point {index + 1} (after block {index + 1}):"]
        lines.append(" " * width + " " + " ".join(t.rjust(width) for t in self._tasks))
        for name, row in zip(self._tasks, matrix):
            cells = " ".join(f"{v:{width}.{digits}f}" for v in row)
            lines.append(name.rjust(width) + " " + cells)
        return "\n".join(lines)

    def to_config(self):
        """A JSON-serialisable dict: `{"tasks": [...], "values": nested lists}`."""
        return {"tasks": list(self._tasks), "values": self._values.tolist()}

    @classmethod
    def from_config(cls, config):
        """Inverse of `to_config`."""
        if not isinstance(config, dict) or set(config) != {"tasks", "values"}:
            raise ValueError(
                f"Expected a dict with keys 'tasks' and 'values'. Received: {config!r}"
            )
        return cls(config["tasks"], config["values"])

    def plot(self, figsize=None, cmap="viridis", path=None):
        """One heat map of the affinity matrix per branch point.

        Needs matplotlib (imported only here). The panels and the task labels
        grow with the number of tasks, so that 40 task names stay readable;
        with few tasks each cell also shows its value.

        Args:
            figsize: figure size in inches; by default it grows with the
                number of tasks and branch points.
            cmap: the colour map.
            path: optional file name; the figure is saved there (PNG, SVG
                or PDF, by extension), with tight bounds so no label is cut.
                Under several processes only process 0 writes it.

        Returns:
            The `matplotlib.figure.Figure`.
        """
        import matplotlib.pyplot as plt

        n, num_tasks = self.num_branch_points, len(self._tasks)
        # 0.22 inch per task keeps 8-point labels apart; never below 3.5 inches.
        panel = max(3.5, 0.22 * num_tasks)
        label_room = 0.075 * max(len(t) for t in self._tasks)  # inches for the names
        if figsize is None:
            figsize = (panel * n + label_room + 1.5, panel + label_room + 0.6)
        fontsize = 8 if num_tasks <= 24 else 7
        figure, axes = plt.subplots(1, n, figsize=figsize, squeeze=False, layout="constrained")
        image = None
        ticks = np.arange(num_tasks)
        for d, ax in enumerate(axes[0]):
            image = ax.imshow(self._values[d], vmin=-1.0, vmax=1.0, cmap=cmap)
            ax.set_title(f"after block {d + 1}", fontsize=9)
            ax.set_xticks(ticks, self._tasks, rotation=90, fontsize=fontsize)
            ax.set_yticks(ticks, self._tasks if d == 0 else [], fontsize=fontsize)
            if num_tasks <= 8:
                for i in range(num_tasks):
                    for j in range(num_tasks):
                        value = self._values[d, i, j]
                        ax.text(
                            j,
                            i,
                            f"{value:.2f}",
                            ha="center",
                            va="center",
                            fontsize=7,
                            color="white" if value < 0.3 else "black",
                        )
        figure.colorbar(image, ax=list(axes[0]), shrink=0.8, label="affinity")
        if path is not None and distributed.is_chief():
            figure.savefig(path, dpi=110, bbox_inches="tight")
        return figure


def rsa_affinity(features):
    """Task affinities by representation similarity analysis.

    For every task and branch point, the RDM of its features on the same K
    inputs (`rdm`); the affinity of two tasks at a branch point is the
    Spearman correlation between the upper triangles (diagonal excluded) of
    their RDMs. Identical representations give 1; independent ones about 0.

    Args:
        features: dict mapping each task name to a list with one array of
            shape `(K, ...)` per branch point; K (the inputs) must be the same
            everywhere, the feature shapes may differ. `branch_point_features`
            returns this format.

    Returns:
        A `TaskAffinity` over the tasks in the dict's order.

    Raises:
        TypeError: if `features` is not a dict of lists.
        ValueError: for different K or numbers of branch points across
            tasks, NaN features, or features whose RDM is constant (no rank
            order, for example a block whose output is the same on every
            input).

    Example:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> f = rng.normal(size=(50, 8))
    >>> affinity = rsa_affinity({"a": [f], "b": [2 * f + 1], "c": [rng.normal(size=(50, 8))]})
    >>> round(float(affinity.values[0, 0, 1]), 6)
    1.0
    >>> bool(abs(affinity.values[0, 0, 2]) < 0.2)
    True
    """
    if not isinstance(features, dict):
        raise TypeError(
            "Expected `features` to be a dict mapping each task name to a list "
            f"of arrays (one per branch point). Received: {type(features).__name__}"
        )
    tasks = check_task_names(list(features))
    counts = {}
    for task in tasks:
        per_point = features[task]
        if isinstance(per_point, np.ndarray) or not isinstance(per_point, (list, tuple)):
            raise TypeError(
                f"Expected features[{task!r}] to be a list with one array per "
                f"branch point. Received: {type(per_point).__name__}"
            )
        if not per_point:
            raise ValueError(f"Expected at least one branch point for task {task!r}. Received: []")
        counts[task] = len(per_point)
    if len(set(counts.values())) > 1:
        raise ValueError(
            f"Expected the same number of branch points for every task. Received: {counts}"
        )
    num_points = counts[tasks[0]]
    sizes = {}
    for task in tasks:
        for d, array in enumerate(features[task]):
            shape = np.shape(array)
            sizes.setdefault(shape[0] if shape else None, []).append((task, d))
    if len(sizes) > 1:
        by_task = {t: int(np.shape(features[t][0])[0]) for t in tasks if np.shape(features[t][0])}
        raise ValueError(
            "Expected features of the same K inputs for every task and branch "
            f"point. Received different K: {sorted(k for k in sizes if k is not None)} "
            f"(first branch point: {by_task})"
        )
    values = np.empty((num_points, len(tasks), len(tasks)))
    for d in range(num_points):
        triangles = []
        for task in tasks:
            matrix = _rdm(_as_features(features[task][d], f"features[{task!r}][{d}]"))
            upper = matrix[np.triu_indices(matrix.shape[0], k=1)]
            if np.ptp(upper) <= 1e-12:
                raise ValueError(
                    f"The features of task {task!r} at branch point {d} give a "
                    "constant RDM (all inputs equally dissimilar), which has no "
                    "rank order. Is that block's output constant (dead units)?"
                )
            triangles.append(upper)
        # Spearman: Pearson correlation of the ranks (ties get their average rank).
        ranks = rankdata(np.stack(triangles), axis=1)
        ranks -= ranks.mean(axis=1, keepdims=True)
        ranks /= np.linalg.norm(ranks, axis=1, keepdims=True)
        values[d] = np.clip(ranks @ ranks.T, -1.0, 1.0)
        np.fill_diagonal(values[d], 1.0)
    return TaskAffinity(tasks, values)
