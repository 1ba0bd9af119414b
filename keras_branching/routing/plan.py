"""`RoutingPlan`: which sub-networks feed which, through which gates.

The result of share routing (methods.md, section 3), and the input of
`RoutingModelBuilder`. Like `BranchingTree` it knows nothing about Keras: it
is plain data that can be validated, compared, serialised and drawn.
"""

import json
import numbers

from keras_branching._validation import check_positive_int
from keras_branching.search import register_plan
from keras_branching.tree import check_task_names

INPUT = "input"


def _where(layer, expert):
    return "tower" if layer is None else f"expert {expert} of layer {layer + 1}"


def _check_route(route, query, width, layer, expert):
    """Validates one route and gate query over a layer of `width` sub-networks.

    `layer` is the 0-based layer of the sub-network that reads the route
    (`None` for a task tower); the route names sub-networks of the layer
    before it by their 0-based index.
    """
    where = _where(layer, expert) if layer is not None else f"the tower of task {expert!r}"
    if isinstance(route, (str, bytes)) or not isinstance(route, (list, tuple)):
        raise TypeError(
            f"Expected the route of {where} to be a list of sub-network indices. "
            f"Received: route={route!r}"
        )
    if layer == 0:
        if list(route) != [INPUT] or query != INPUT:
            raise ValueError(
                f"The sub-networks of the first layer read the input: expected "
                f"route=['input'] and query='input' for {where}. "
                f"Received: route={list(route)!r}, query={query!r}"
            )
        return (INPUT,), INPUT
    if not route:
        raise ValueError(f"Expected a non-empty route for {where}. Received: route={list(route)!r}")
    below = f"layer {layer}" if layer is not None else "the last layer"
    for index in route:
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise TypeError(
                f"Expected the route of {where} to hold sub-network indices (ints). "
                f"Received: route={list(route)!r}"
            )
        if not 0 <= index < width:
            raise ValueError(
                f"The route of {where} names sub-network {index}, but {below} has "
                f"{width} sub-networks (indices 0 to {width - 1}). "
                f"Received: route={list(route)!r}"
            )
    if len(set(route)) != len(route):
        raise ValueError(
            f"Expected the route of {where} to name each sub-network once. "
            f"Received: route={list(route)!r}"
        )
    if query != INPUT and (
        isinstance(query, bool) or not isinstance(query, numbers.Integral) or not 0 <= query < width
    ):
        raise ValueError(
            f"Expected the gate query of {where} to be 'input' or the index of a "
            f"sub-network of {below} (0 to {width - 1}). Received: query={query!r}"
        )
    return tuple(sorted(int(i) for i in route)), (query if query == INPUT else int(query))


def _as_pair(spec, where):
    if isinstance(spec, dict):
        if set(spec) != {"route", "query"}:
            raise ValueError(
                f"Expected {where} to be a dict with keys 'route' and 'query'. Received: {spec!r}"
            )
        return spec["route"], spec["query"]
    if isinstance(spec, (list, tuple)) and len(spec) == 2:
        return spec
    raise TypeError(
        f"Expected {where} to be a pair (route, query) or a dict with keys "
        f"'route' and 'query'. Received: {spec!r}"
    )


@register_plan
class RoutingPlan:
    """Routes and gates of a multi-task network of sub-network layers.

    The shared part of the network is `num_layers` layers of sub-networks
    (experts); each task has a tower on top. Every sub-network of layer 2 or
    later, and every tower, reads a *route*: a non-empty set of sub-networks
    of the layer just below it, mixed by a *gate*, softmax weights over the
    route's members computed from a *gate query* (the model's input, or one
    sub-network of the layer below). A route of one member needs no gate.
    The sub-networks of the first layer read the input.

    Layers are numbered from 1 in drawings and messages and indexed from 0
    in code; sub-networks are indexed from 0 inside their layer. Routes are
    stored sorted, so plans that differ only by the order of a route's
    members are equal.

    Shared-bottom and MMoE are special cases: see `shared_bottom` and
    `mmoe`.

    Args:
        tasks: ordered list of unique task names.
        layers: one entry per layer; each a list with one `(route, query)`
            pair (or `{"route": ..., "query": ...}` dict) per sub-network of
            that layer. First layer: `(["input"], "input")`. Later layers:
            `route` a list of indices of sub-networks of the layer below and
            `query` either `"input"` or one such index.
        towers: dict mapping every task name to its `(route, query)` over
            the last layer.

    Raises:
        TypeError: if an argument has the wrong structure.
        ValueError: for an empty route, a route or query naming a
            sub-network that does not exist, a layer without sub-networks,
            or towers whose tasks differ from `tasks`.

    Example:

    >>> plan = RoutingPlan(
    ...     ["a", "b"],
    ...     layers=[[(["input"], "input")] * 2, [([0, 1], "input"), ([1], "input")]],
    ...     towers={"a": ([0], "input"), "b": ([0, 1], 1)},
    ... )
    >>> plan.widths
    (2, 2)
    >>> RoutingPlan.from_json(plan.to_json()) == plan
    True
    """

    def __init__(self, tasks, layers, towers):
        self._tasks = check_task_names(tasks)
        if isinstance(layers, (str, bytes)) or not isinstance(layers, (list, tuple)):
            raise TypeError(
                f"Expected `layers` to be a list of layers. Received: layers={layers!r}"
            )
        if not layers:
            raise ValueError(f"Expected at least one layer. Received: layers={layers!r}")
        checked, width = [], None
        for depth, layer in enumerate(layers):
            if isinstance(layer, (str, bytes)) or not isinstance(layer, (list, tuple)):
                raise TypeError(
                    f"Expected layer {depth + 1} to be a list of (route, query) pairs. "
                    f"Received: {layer!r}"
                )
            if not layer:
                raise ValueError(
                    f"Expected at least one sub-network in layer {depth + 1}. Received: {layer!r}"
                )
            checked.append(
                tuple(
                    _check_route(*_as_pair(spec, _where(depth, m)), width, depth, m)
                    for m, spec in enumerate(layer)
                )
            )
            width = len(layer)
        if not isinstance(towers, dict):
            raise TypeError(
                "Expected `towers` to be a dict mapping each task to its (route, query). "
                f"Received: towers={towers!r}"
            )
        if set(towers) != set(self._tasks):
            raise ValueError(
                f"Expected one tower per task {list(self._tasks)}. "
                f"Received towers for {list(towers)}"
            )
        self._layers = tuple(checked)
        self._towers = {
            t: _check_route(*_as_pair(towers[t], f"the tower of task {t!r}"), width, None, t)
            for t in self._tasks
        }

    # Special cases.

    @classmethod
    def shared_bottom(cls, tasks, num_layers=1):
        """Hard parameter sharing: one sub-network per layer, read by every tower.

        Args:
            tasks: the task names.
            num_layers: number of layers of the shared bottom (>= 1).
        """
        num_layers = check_positive_int("num_layers", num_layers)
        layers = [[([INPUT], INPUT)]] + [[([0], INPUT)]] * (num_layers - 1)
        return cls(tasks, layers, {t: ([0], INPUT) for t in check_task_names(tasks)})

    @classmethod
    def mmoe(cls, tasks, num_experts):
        """Multi-gate mixture of experts (Ma et al., KDD 2018).

        One layer of `num_experts` sub-networks reading the input; each
        task's tower reads all of them through its own gate, queried by the
        input.
        """
        num_experts = check_positive_int("num_experts", num_experts)
        everyone = list(range(num_experts))
        return cls(
            tasks,
            [[([INPUT], INPUT)] * num_experts],
            {t: (everyone, INPUT) for t in check_task_names(tasks)},
        )

    # Properties.

    @property
    def tasks(self):
        """The task names, in order."""
        return self._tasks

    @property
    def num_layers(self):
        """The number of layers of sub-networks."""
        return len(self._layers)

    @property
    def widths(self):
        """The number of sub-networks of each layer, a tuple."""
        return tuple(len(layer) for layer in self._layers)

    def route(self, layer, expert):
        """`(route, query)` of sub-network `expert` of `layer` (both 0-based)."""
        return self._layers[layer][expert]

    def tower(self, task):
        """`(route, query)` of the tower of `task`."""
        return self._towers[task]

    def used_by(self, task):
        """The sub-networks `task`'s tower depends on, a set of `(layer, expert)`.

        A sub-network counts if its output reaches the tower through routes
        or gate queries.
        """
        used = set()
        frontier = self._sources(*self._towers[task])
        layer = self.num_layers - 1
        while frontier and layer >= 0:
            used.update((layer, m) for m in frontier)
            below = set()
            if layer > 0:
                for m in frontier:
                    below.update(self._sources(*self._layers[layer][m]))
            frontier, layer = below, layer - 1
        return used

    def used_experts(self):
        """The sub-networks some tower depends on, a sorted list of `(layer, expert)`."""
        return sorted(set().union(*(self.used_by(t) for t in self._tasks)))

    @staticmethod
    def _sources(route, query):
        return set(route) | ({query} if query != INPUT else set())

    # Comparison and serialisation.

    def _key(self):
        return (self._tasks, self._layers, tuple(self._towers[t] for t in self._tasks))

    def __eq__(self, other):
        if not isinstance(other, RoutingPlan):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def to_config(self):
        """A JSON-serialisable dict with keys `tasks`, `layers` and `towers`."""

        def spec(route, query):
            return {"route": list(route), "query": query}

        return {
            "tasks": list(self._tasks),
            "layers": [[spec(*pair) for pair in layer] for layer in self._layers],
            "towers": {t: spec(*self._towers[t]) for t in self._tasks},
        }

    @classmethod
    def from_config(cls, config):
        """Inverse of `to_config`."""
        if not isinstance(config, dict) or set(config) != {"tasks", "layers", "towers"}:
            raise ValueError(
                f"Expected a dict with keys 'tasks', 'layers' and 'towers'. Received: {config!r}"
            )
        return cls(config["tasks"], config["layers"], config["towers"])

    def to_json(self):
        """The plan as a JSON string."""
        return json.dumps(self.to_config())

    @classmethod
    def from_json(cls, text):
        """Inverse of `to_json`."""
        return cls.from_config(json.loads(text))

    # Drawing.

    def __repr__(self):
        def name(layer, expert):
            return f"e{layer + 1}.{expert}"

        def gate(layer, route, query):
            members = " + ".join(name(layer, m) for m in route)
            if len(route) == 1:
                return members
            q = query if query == INPUT else name(layer, query)
            return f"gate[{q}]({members})"

        used = set(self.used_experts())
        widths = "x".join(str(w) for w in self.widths)
        lines = [f"RoutingPlan({len(self._tasks)} tasks, sub-networks per layer {widths})"]
        lines.append(
            "  layer 1: " + " ".join(name(0, m) for m in range(self.widths[0])) + " <- input"
        )
        for depth in range(1, self.num_layers):
            lines.append(f"  layer {depth + 1}:")
            for m, (route, query) in enumerate(self._layers[depth]):
                lines.append(f"    {name(depth, m)} <- {gate(depth - 1, route, query)}")
        lines.append("  towers:")
        width = max(len(t) for t in self._tasks)
        for t in self._tasks:
            lines.append(f"    {t:<{width}} <- {gate(self.num_layers - 1, *self._towers[t])}")
        unused = [
            name(depth, m)
            for depth, w in enumerate(self.widths)
            for m in range(w)
            if (depth, m) not in used
        ]
        if unused:
            lines.append("  unused: " + " ".join(unused))
        return "\n".join(lines)

    __str__ = __repr__

    def plot(self, path=None, title=None):
        """Draws the plan with matplotlib; see `keras_branching.plotting.plot_routing_plan`.

        Returns:
            The matplotlib `Figure`.
        """
        from keras_branching.plotting import plot_routing_plan

        return plot_routing_plan(self, path=path, title=title)
