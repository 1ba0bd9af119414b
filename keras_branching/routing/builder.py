"""`RoutingModelBuilder`: turns a `RoutingPlan` into a Keras model."""

import keras

from keras_branching._validation import sanitize_name
from keras_branching.builder import BranchedModelBuilder
from keras_branching.layers.gated_route import GatedRoute
from keras_branching.routing.plan import INPUT, RoutingPlan


class RoutingModelBuilder:
    """Builds functional Keras models from routing plans.

    The builder holds what stays the same across plans: the input, one
    sub-network (expert) factory per layer, and the tasks, whose heads are
    the towers. `build(plan)` gives every sub-network of the plan that some
    tower depends on its own freshly initialised copy of its layer's
    expert; sub-networks no tower depends on are not built. A route of one
    member passes its sub-network's output through unchanged; a longer
    route goes through a `GatedRoute` layer fed by the route's gate query.
    The model has one output per task, in a dict keyed by task name, and is
    compiled with each task's loss, metrics and weight, exactly like
    `BranchedModelBuilder.build`.

    Layer names: `expert_<layer>_<index>` (layer from 1, index from 0, as
    in the plan's drawing), `gate_<layer>_<index>` for the gate in front of
    a sub-network, `gate_<task>` for the gate in front of a tower, and
    `head_<task>` for the tower itself.

    Args:
        inputs: a `keras.Input` or a shape tuple (without the batch axis).
            Gate queries read the input, so it must be a batch of vectors
            if any plan queries it.
        experts: list of zero-argument callables, one per layer, each
            returning a fresh Keras layer (or model) every time it is
            called. Layer instances are also accepted and cloned with their
            seeds shifted per copy (see `BranchedModelBuilder`). All
            sub-networks of one layer come from the same factory, so they
            have one output shape and can be gated together.
        tasks: list of `keras_branching.Task`; `Task.head` builds the tower.
        optimizer: an optimizer name or instance for `compile`.

    Example:

    >>> import keras
    >>> from keras_branching.task import Task
    >>> builder = RoutingModelBuilder(
    ...     inputs=(8,),
    ...     experts=[lambda: keras.layers.Dense(4, activation="relu")],
    ...     tasks=[
    ...         Task("a", head=lambda: keras.layers.Dense(1), loss="mse"),
    ...         Task("b", head=lambda: keras.layers.Dense(1), loss="mse"),
    ...     ],
    ... )
    >>> model = builder.build(RoutingPlan.mmoe(["a", "b"], num_experts=3))
    >>> sorted(model.output.keys())
    ['a', 'b']
    """

    def __init__(self, inputs, experts, tasks, optimizer="adam"):
        # The branched builder validates and owns the shared pieces: the
        # input, the per-layer factories (its "blocks"), the tasks' heads
        # and compilation.
        self._base = BranchedModelBuilder(inputs, experts, tasks, optimizer=optimizer)

    @property
    def tasks(self):
        """The tasks, a list of `Task`."""
        return self._base.tasks

    @property
    def task_names(self):
        """The task names, in the builder's order."""
        return self._base.task_names

    @property
    def num_layers(self):
        """The number of layers of sub-networks."""
        return self._base.num_blocks

    def make_input(self):
        """A fresh `keras.Input` matching the builder's input."""
        return self._base.make_input()

    def make_expert(self, layer, index):
        """A fresh copy of `layer`'s expert (both 0-based), named `expert_<l>_<i>`."""
        return self._base.make_block(layer, copy_index=index, name=f"expert_{layer + 1}_{index}")

    def make_head(self, task):
        """A fresh tower for `task` (a `Task` or its name), named `head_<task>`."""
        return self._base.make_head(task)

    def compile(self, model, **compile_kwargs):
        """Compiles `model` with the builder's optimizer and each task's loss."""
        return self._base.compile(model, **compile_kwargs)

    def check_plan(self, plan):
        """Raises a clear error unless `plan` fits this builder's tasks and layers."""
        if not isinstance(plan, RoutingPlan):
            raise TypeError(
                f"Expected a `RoutingPlan`. Received: {plan!r} (of type {type(plan).__name__})"
            )
        if set(plan.tasks) != set(self.task_names):
            raise ValueError(
                f"The plan's tasks {list(plan.tasks)} differ from the builder's "
                f"tasks {list(self.task_names)}."
            )
        if plan.num_layers != self.num_layers:
            raise ValueError(
                f"The plan has {plan.num_layers} layers but the builder has "
                f"{self.num_layers} expert factories. Expected a plan with "
                f"{self.num_layers} layers."
            )

    def build(self, plan, compile=True, **compile_kwargs):
        """Builds (and compiles) the functional model of `plan`.

        Args:
            plan: a `RoutingPlan` over the builder's tasks and layers.
            compile: whether to compile the model (default True).
            **compile_kwargs: extra arguments for `compile`.

        Returns:
            A `keras.Model` whose output is a dict keyed by task name.

        Raises:
            TypeError: if `plan` is not a `RoutingPlan`.
            ValueError: if its tasks or number of layers differ from the
                builder's.
        """
        self.check_plan(plan)
        inputs = self.make_input()
        features = self.apply_plan(plan, inputs)
        outputs = {t: self.make_head(t)(features[t]) for t in self.task_names}
        model = keras.Model(inputs, outputs, name="routing_model")
        if compile:
            self.compile(model, **compile_kwargs)
        return model

    def apply_plan(self, plan, inputs):
        """Applies fresh sub-networks laid out as `plan` to the tensor `inputs`.

        Returns a dict mapping each task name to its tower's input (the
        gated mix of its route). Useful to embed the routed trunk in a
        larger functional model.
        """
        self.check_plan(plan)
        used = set(plan.used_experts())
        previous = None  # outputs of the layer below, by index
        for depth, width in enumerate(plan.widths):
            current = {}
            for m in range(width):
                if (depth, m) not in used:
                    continue
                if depth == 0:
                    x = inputs
                else:
                    x = self._route(
                        *plan.route(depth, m), previous, inputs, name=f"gate_{depth + 1}_{m}"
                    )
                current[m] = self.make_expert(depth, m)(x)
            previous = current
        return {
            t: self._route(*plan.tower(t), previous, inputs, name=f"gate_{sanitize_name(t)}")
            for t in self.task_names
        }

    @staticmethod
    def _route(route, query, previous, inputs, name):
        if len(route) == 1:
            return previous[route[0]]
        query = inputs if query == INPUT else previous[query]
        return GatedRoute(len(route), name=name)([query] + [previous[m] for m in route])

    def count_params(self, plan):
        """The parameter count of `build(plan)` (built without compiling)."""
        return self.build(plan, compile=False).count_params()
