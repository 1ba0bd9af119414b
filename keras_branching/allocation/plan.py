"""`Allocation`: which components of each routed layer each task uses.

The result of learned parameter allocation (methods.md, section 4) and the
input of `AllocationBuilder.build`. Like `BranchingTree` it knows nothing
about Keras: plain data that can be validated, compared, serialised and
drawn.
"""

import json

import numpy as np

from keras_branching.search import register_plan
from keras_branching.tree import check_task_names


def _check_matrix(matrix, index, num_tasks):
    """`matrix` as a read-only boolean array of shape (num_tasks, components)."""
    array = np.asarray(matrix)
    if array.dtype != bool:
        if not np.issubdtype(array.dtype, np.integer) or not np.isin(array, (0, 1)).all():
            raise TypeError(
                f"Expected allocation {index} to hold booleans (or 0/1 ints). "
                f"Received an array of dtype {array.dtype}: {matrix!r}"
            )
        array = array.astype(bool)
    if array.ndim != 2 or array.shape[0] != num_tasks or array.shape[1] < 1:
        raise ValueError(
            f"Expected allocation {index} to be a (tasks x components) matrix of shape "
            f"({num_tasks}, C) with C >= 1. Received shape {array.shape}"
        )
    array = array.copy()
    array.flags.writeable = False
    return array


@register_plan
class Allocation:
    """Which components each task uses, one boolean matrix per routed layer.

    Matrix `l` has one row per task (in the order of `tasks`) and one column
    per component of routed layer `l`; `True` means the task runs that
    component. Tasks that use the same component share its weights; with
    `independent=True` every task has its own copy of everything it uses
    instead (the independent baseline). A task that uses no component of a
    layer gets zeros there (the mean over an empty set).

    Args:
        tasks: ordered list of unique task names.
        layers: one `(num_tasks, num_components)` matrix per routed layer,
            of booleans or 0/1 ints (nested lists or numpy arrays).
        independent: whether tasks keep their own copies of every layer.

    Raises:
        TypeError: for bad task names or non-boolean matrices.
        ValueError: for no matrix, or a matrix of the wrong shape.

    Example:

    >>> plan = Allocation(["a", "b"], [[[1, 1, 0], [0, 1, 1]]])
    >>> plan.num_components
    (3,)
    >>> plan.shared_components().tolist()
    [[2, 1], [1, 2]]
    >>> Allocation.from_json(plan.to_json()) == plan
    True
    >>> plan
    Allocation(2 tasks, 1 routed layer)
      layer 1  c1 c2 c3
      a        #  #  .
      b        .  #  #
    """

    def __init__(self, tasks, layers, independent=False):
        self._tasks = check_task_names(tasks)
        if isinstance(layers, (str, bytes, np.ndarray)) or not isinstance(layers, (list, tuple)):
            raise TypeError(
                "Expected `layers` to be a list of (tasks x components) matrices, one per "
                f"routed layer. Received: layers={layers!r}"
            )
        if not layers:
            raise ValueError(f"Expected at least one routed layer. Received: layers={layers!r}")
        if not isinstance(independent, bool):
            raise TypeError(
                f"Expected `independent` to be a bool. Received: independent={independent!r}"
            )
        self._layers = tuple(_check_matrix(m, i, len(self._tasks)) for i, m in enumerate(layers))
        self._independent = independent

    # Special cases.

    @classmethod
    def shared(cls, tasks, num_components):
        """Every task uses every component, with one set of weights.

        Args:
            tasks: the task names.
            num_components: the number of components of each routed layer.
        """
        tasks = check_task_names(tasks)
        return cls(tasks, [np.ones((len(tasks), c), bool) for c in num_components])

    @classmethod
    def independent_of(cls, tasks, num_components):
        """Every task uses every component, each task with its own copies."""
        tasks = check_task_names(tasks)
        return cls(
            tasks, [np.ones((len(tasks), c), bool) for c in num_components], independent=True
        )

    # Properties.

    @property
    def tasks(self):
        """The task names, in row order."""
        return self._tasks

    @property
    def layers(self):
        """The read-only boolean matrices, one per routed layer."""
        return self._layers

    @property
    def independent(self):
        """Whether every task has its own copy of each layer."""
        return self._independent

    @property
    def num_layers(self):
        """The number of routed layers."""
        return len(self._layers)

    @property
    def num_components(self):
        """The number of components of each routed layer, a tuple."""
        return tuple(m.shape[1] for m in self._layers)

    def components(self, task, layer):
        """The 0-based components `task` uses in routed layer `layer`, a tuple."""
        row = self._layers[layer][self._tasks.index(task)]
        return tuple(int(k) for k in np.flatnonzero(row))

    def shared_components(self):
        """How many components each pair of tasks shares, over all routed layers.

        Returns:
            A `(num_tasks, num_tasks)` int numpy array; the diagonal holds
            the number of components each task uses. With `independent`
            tasks share nothing: the off-diagonal entries are 0.
        """
        shared = sum(m.astype(int) @ m.T.astype(int) for m in self._layers)
        if self._independent:
            shared = np.diag(np.diag(shared))
        return shared

    # Comparison and serialisation.

    def _key(self):
        return (
            self._tasks,
            tuple(m.shape for m in self._layers),
            tuple(m.tobytes() for m in self._layers),
            self._independent,
        )

    def __eq__(self, other):
        if not isinstance(other, Allocation):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def to_config(self):
        """A JSON-serialisable dict: `tasks`, `layers` (0/1 nested lists), `independent`."""
        return {
            "tasks": list(self._tasks),
            "layers": [m.astype(int).tolist() for m in self._layers],
            "independent": self._independent,
        }

    @classmethod
    def from_config(cls, config):
        """Inverse of `to_config`."""
        if not isinstance(config, dict) or not {"tasks", "layers"} <= set(config):
            raise ValueError(
                "Expected a dict with keys 'tasks', 'layers' and 'independent'. "
                f"Received: {config!r}"
            )
        return cls(config["tasks"], config["layers"], bool(config.get("independent", False)))

    def to_json(self):
        """The plan as a JSON string."""
        return json.dumps(self.to_config())

    @classmethod
    def from_json(cls, text):
        """Inverse of `to_json`."""
        return cls.from_config(json.loads(text))

    # Drawing.

    def __repr__(self):
        count = self.num_layers
        kind = ", independent copies" if self._independent else ""
        lines = [
            f"Allocation({len(self._tasks)} tasks, {count} routed layer{'s' * (count != 1)}{kind})"
        ]
        width = max(max(len(t) for t in self._tasks), len(f"layer {count}"))
        for index, matrix in enumerate(self._layers):
            cells = [f"c{k + 1}" for k in range(matrix.shape[1])]
            size = max(len(c) for c in cells)
            lines.append(
                f"  {f'layer {index + 1}':<{width}}  " + " ".join(f"{c:<{size}}" for c in cells)
            )
            for task, row in zip(self._tasks, matrix):
                marks = " ".join(f"{'#' if on else '.':<{size}}" for on in row)
                lines.append(f"  {task:<{width}}  {marks}".rstrip())
        return "\n".join(lines)

    __str__ = __repr__

    def plot(self, probabilities=None, components=None, path=None, title=None):
        """Draws the allocation; see `keras_branching.plotting.plot_allocation`.

        Args:
            probabilities: optional float matrices of the same shapes (for
                example a search's final probabilities, in
                `SearchResult.details["probabilities"]`): cells are coloured
                by them and dots mark the allocation.
            components: optional component names: one list for every routed
                layer, or one list per routed layer; by default `c1`, `c2`...
            path: optional file name; the figure is saved there.
            title: optional figure title.

        Returns:
            The matplotlib `Figure`.
        """
        from keras_branching.plotting import plot_allocation

        if components is None:
            components = [[f"c{k + 1}" for k in range(c)] for c in self.num_components]
        return plot_allocation(
            list(self._layers),
            None if probabilities is None else [np.asarray(p, float) for p in probabilities],
            tasks=list(self._tasks),
            components=components,
            layer_names=[f"routed layer {i + 1}" for i in range(self.num_layers)],
            path=path,
            title=title,
        )
