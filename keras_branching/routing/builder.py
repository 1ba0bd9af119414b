"""`RoutingModelBuilder`: turns a `RoutingPlan` into a Keras model."""

import warnings

from keras_branching import fusion, naming
from keras_branching.builder import BranchedModelBuilder, _TaskRows, seeded_layers
from keras_branching.layers.gated_route import GatedRoute
from keras_branching.layers.group_gather import GatherGroups, JoinGroups, SelectGroup, StackGroups
from keras_branching.models import TaskModel
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

    Layer names come from `keras_branching.naming`: `expert_name(layer,
    index)` for a sub-network (`expert_<layer>_<index>`, layer from 1, index
    from 0, as in the plan's drawing), `gate_name(layer, index)` for the
    gate in front of it, `tower_gate_name(task)` for the gate in front of a
    tower and `head_name(task)` for the tower itself.

    Inputs follow `inputs`, as for `BranchedModelBuilder`: one shape gives
    one input every task reads; a dict of shapes keyed by task gives one
    input per task (a dict keyed by `input_names[task]`). Each sub-network
    then runs once, on the joined batches of the tasks whose towers depend
    on it (`JoinTaskBatches`), and each gate reads the rows of the tasks it
    serves (cut with `SplitTaskBatches` where fewer tasks read on); when
    every task gets the same batch, the model computes what the one-input
    model computes.

    Seeds: with `seed` an int, `build(plan)` gives the same initial weights
    every time, in any process, without a global seed (see
    `BranchedModelBuilder`, which says what is and is not covered).

    Args:
        inputs: a `keras.Input`, a shape tuple (without the batch axis), or
            a dict of one shape tuple per task. Gate queries read the
            input, so it must be a batch of vectors if any plan queries it.
        experts: list of zero-argument callables, one per layer, each
            returning a fresh Keras layer (or model) every time it is
            called. Layer instances are also accepted and cloned with their
            seeds shifted per copy (see `BranchedModelBuilder`). All
            sub-networks of one layer come from the same factory, so they
            have one output shape and can be gated together.
        tasks: list of `keras_branching.Task`; `Task.head` builds the tower.
        optimizer: an optimizer name or instance for `compile`.
        seed: None or an int making `build` reproducible.

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
    >>> plan = RoutingPlan.mmoe(["a", "b"], num_experts=3)
    >>> model = builder.build(plan)
    >>> sorted(model.output.keys())
    ['a', 'b']
    >>> builder.count_params(plan) == model.count_params()
    True
    """

    def __init__(self, inputs, experts, tasks, optimizer="adam", seed=None):
        # The branched builder validates and owns the shared pieces: the
        # input, the per-layer factories (its "blocks"), the tasks' heads
        # and compilation.
        self._base = BranchedModelBuilder(inputs, experts, tasks, optimizer=optimizer, seed=seed)
        self._sizes = None
        self._gate_sizes = {}

    @property
    def seed(self):
        """The builder's seed (None or an int)."""
        return self._base.seed

    @property
    def per_task_inputs(self):
        """Whether the models take one input per task (a dict keyed by `input_names`)."""
        return self._base.per_task_inputs

    @property
    def input_names(self):
        """`{task: key of its input}` in a model with per-task inputs."""
        return self._base.input_names

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
        """A fresh `keras.Input` matching the builder's input (for per-task inputs:
        one input of the tasks' common shape)."""
        return self._base.make_input()

    def make_inputs(self):
        """Fresh `keras.Input`s in a dict keyed by task (see `BranchedModelBuilder`)."""
        return self._base.make_inputs()

    def model_inputs(self, inputs):
        """The `inputs` of `keras.Model` from `make_inputs()`'s dict."""
        return self._base.model_inputs(inputs)

    def make_expert(self, layer, index):
        """A fresh copy of `layer`'s expert (both 0-based), named by `naming.expert_name`."""
        return self._base.make_block(layer, copy_index=index, name=naming.expert_name(layer, index))

    def make_head(self, task):
        """A fresh tower for `task` (a `Task` or its name), named `naming.head_name(task)`."""
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

    def build(self, plan, compile=True, fuse=False, **compile_kwargs):
        """Builds (and compiles) the functional model of `plan`.

        Args:
            plan: a `RoutingPlan` over the builder's tasks and layers.
            compile: whether to compile the model (default True).
            fuse: False (default): every expert is its own layer. True: the
                used experts of each layer are one `StackedBlock`
                (`naming.stacked_experts_name`) computing them all at once
                on tensors laid out `(batch, experts, ...)`; its input is
                the shared input repeated (`StackGroups`), the rows of the
                layer below (`GatherGroups`) or the experts' gated mixes
                joined (`JoinGroups`), and each gate or tower reads its
                experts' rows through `SelectGroup`. Same parameters and
                layer names for gates and towers, so weights move by name
                (and by `StackedBlock.set_group_weights` for the experts).
                Falls back to separate experts, with a `UserWarning`, when
                a layer's experts cannot be stacked.
            **compile_kwargs: extra arguments for `compile`.

        Returns:
            A `keras.Model` whose output is a dict keyed by task name.

        Raises:
            TypeError: if `plan` is not a `RoutingPlan`.
            ValueError: if its tasks or number of layers differ from the
                builder's, for a `fuse` other than True or False, or for
                `fuse=True` with one input per task.
        """
        self.check_plan(plan)
        if not isinstance(fuse, bool):
            raise ValueError(f"Expected `fuse` to be True or False. Received: fuse={fuse!r}")
        if fuse and self.per_task_inputs:
            raise ValueError(
                "Expected a builder with one shared input for `fuse=True`: with one input per "
                f"task the experts see different batches. Received per-task inputs for "
                f"{list(self.task_names)}"
            )
        if fuse:
            model = self._build_fused(plan)
            if model is not None:
                if compile:
                    self.compile(model, **compile_kwargs)
                return model
        with seeded_layers(self.seed, salt="routing"):
            inputs = self.make_inputs()
            trunk = inputs if self.per_task_inputs else inputs[self.task_names[0]]
            features = self.apply_plan(plan, trunk)
            outputs = {t: self.make_head(t)(features[t]) for t in self.task_names}
        model = TaskModel(self.model_inputs(inputs), outputs, name="routing_model")
        if compile:
            self.compile(model, **compile_kwargs)
        return model

    def _build_fused(self, plan):
        """The fused model of `plan` (see `build`), or None (with a warning) if an
        expert layer cannot be stacked."""
        used = set(plan.used_experts())
        with seeded_layers(self.seed, salt="routing"):
            inputs = self.make_inputs()
            x = inputs[self.task_names[0]]
            experts = []
            for depth, width in enumerate(plan.widths):
                members = [m for m in range(width) if (depth, m) in used]
                experts.append({m: self.make_expert(depth, m) for m in members})
                reason = fusion.copies_reason(list(experts[-1].values()))
                if reason is not None:
                    warnings.warn(
                        f"Building separate experts: the experts of layer {depth} cannot be "
                        f"stacked ({reason}).",
                        UserWarning,
                        stacklevel=4,
                    )
                    return None
        with seeded_layers(self.seed, salt="routing_fused"):
            previous, h = None, None  # {expert: row}, stacked output of the layer below
            outputs = {}

            def output(depth, m):  # expert m of layer `depth`, as a tensor (batch, ...)
                if (depth, m) not in outputs:
                    select = SelectGroup(previous[m], name=naming.expert_output_name(depth, m))
                    outputs[(depth, m)] = select(h)
                return outputs[(depth, m)]

            def route(depth, members, query, name):  # `depth`: the layer the route reads
                if len(members) == 1:
                    return output(depth, members[0])
                query = x if query == INPUT else output(depth, query)
                gate = GatedRoute(len(members), name=name)
                return gate([query] + [output(depth, m) for m in members])

            for depth, layer_experts in enumerate(experts):
                members = list(layer_experts)
                if depth == 0:
                    stacked_in = StackGroups(len(members), name=naming.expert_inputs_name(0))(x)
                else:
                    routes = [plan.route(depth, m) for m in members]
                    if all(len(r) == 1 for r, _ in routes):
                        indices = [previous[r[0]] for r, _ in routes]
                        stacked_in = h
                        if indices != list(range(h.shape[1])):
                            gather = GatherGroups(indices, name=naming.expert_inputs_name(depth))
                            stacked_in = gather(h)
                    else:
                        mixes = [
                            route(depth - 1, r, q, naming.gate_name(depth, m))
                            for (r, q), m in zip(routes, members)
                        ]
                        stacked_in = JoinGroups(name=naming.expert_inputs_name(depth))(mixes)
                _, h = fusion.stack_copies(
                    list(layer_experts.values()), stacked_in, naming.stacked_experts_name(depth)
                )
                previous = {m: i for i, m in enumerate(members)}
            last = plan.num_layers - 1
            features = {
                t: route(last, *plan.tower(t), naming.tower_gate_name(t)) for t in self.task_names
            }
        with seeded_layers(self.seed, salt="routing_heads"):
            heads = {t: self.make_head(t)(features[t]) for t in self.task_names}
        return TaskModel(self.model_inputs(inputs), heads, name="routing_model")

    def apply_plan(self, plan, inputs):
        """Applies fresh sub-networks laid out as `plan` to `inputs`.

        Args:
            plan: a `RoutingPlan` over the builder's tasks and layers.
            inputs: one tensor every task reads, or a dict of tensors keyed
                by task (each sub-network then runs once on the joined
                batches of the tasks that depend on it).

        Returns:
            A dict mapping each task name to its tower's input (the gated
            mix of its route). Useful to embed the routed trunk in a larger
            functional model.
        """
        self.check_plan(plan)
        if isinstance(inputs, dict):
            return self._apply_plan_per_task(plan, inputs)
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
                        *plan.route(depth, m), previous, inputs, name=naming.gate_name(depth, m)
                    )
                current[m] = self.make_expert(depth, m)(x)
            previous = current
        return {
            t: self._route(*plan.tower(t), previous, inputs, name=naming.tower_gate_name(t))
            for t in self.task_names
        }

    def _apply_plan_per_task(self, plan, inputs):
        """`apply_plan` on a dict of tensors keyed by task."""
        if set(inputs) != set(self.task_names):
            raise ValueError(
                f"Expected one input tensor per task {list(self.task_names)}. "
                f"Received tensors for {sorted(inputs)}"
            )
        used = plan.used_experts()
        depends = {t: plan.used_by(t) for t in self.task_names}
        users = {e: tuple(t for t in self.task_names if e in depends[t]) for e in used}
        rows = _TaskRows(inputs, len(self.task_names), set())
        previous = None  # {index: output} of the layer below

        def read(depth, index, want):  # rows `want` of expert `index` of layer `depth`
            if index == INPUT:
                return rows.join(inputs, want, naming.SHARED_INPUT)
            have = users[(depth, index)]
            return rows.rows(previous[index], have, want, naming.expert_name(depth, index))

        def route(depth, members, query, want, name):  # `depth`: the layer routes read
            if len(members) == 1:
                return read(depth, members[0], want)
            gate = GatedRoute(len(members), name=name)
            return gate([read(depth, query, want)] + [read(depth, m, want) for m in members])

        for depth, width in enumerate(plan.widths):
            current = {}
            for m in range(width):
                if (depth, m) not in users:
                    continue
                want = users[(depth, m)]
                if depth == 0:
                    x = rows.join(inputs, want, naming.SHARED_INPUT)
                else:
                    x = route(depth - 1, *plan.route(depth, m), want, naming.gate_name(depth, m))
                current[m] = self.make_expert(depth, m)(x)
            previous = current
        last = plan.num_layers - 1
        return {
            t: route(last, *plan.tower(t), (t,), naming.tower_gate_name(t)) for t in self.task_names
        }

    @staticmethod
    def _route(route, query, previous, inputs, name):
        if len(route) == 1:
            return previous[route[0]]
        query = inputs if query == INPUT else previous[query]
        return GatedRoute(len(route), name=name)([query] + [previous[m] for m in route])

    # Pricing plans without building them.

    def _expert_and_head_sizes(self):
        """Parameter counts of one expert per layer and of each tower, with the
        feature size of each layer's output (the gate queries' width)."""
        if self._sizes is None:
            x = self.make_input()
            input_features = x.shape[-1]
            expert_sizes, features = [], []
            for layer in range(self.num_layers):
                expert = self.make_expert(layer, 0)
                x = expert(x)
                expert_sizes.append(expert.count_params())
                features.append(x.shape[-1])
            head_sizes = {}
            for task in self.tasks:
                head = self.make_head(task)
                head(x)
                head_sizes[task.name] = head.count_params()
            self._sizes = (input_features, expert_sizes, features, head_sizes)
        return self._sizes

    def _gate_size(self, query_features, num_inputs):
        key = (query_features, num_inputs)
        if key not in self._gate_sizes:
            gate = GatedRoute(num_inputs)
            gate.build([(None, query_features)] + [(None, 1)] * num_inputs)
            self._gate_sizes[key] = gate.count_params()
        return self._gate_sizes[key]

    def count_params(self, plan):
        """Exactly `build(plan).count_params()`, without building the model.

        The sizes of one expert of each layer and of each tower are measured
        once (by building one chain symbolically) and cached, as
        `BranchedModelBuilder.count_params` does; a plan's size is then a sum
        over the sub-networks some tower depends on and the gates of routes
        with more than one member.
        """
        self.check_plan(plan)
        input_features, expert_sizes, features, head_sizes = self._expert_and_head_sizes()
        used = plan.used_experts()
        total = sum(expert_sizes[layer] for layer, _ in used) + sum(head_sizes.values())

        def gate(layer, route, query):  # `layer`: the layer the route reads
            if len(route) == 1:
                return 0
            width = input_features if query == INPUT else features[layer]
            return self._gate_size(width, len(route))

        total += sum(gate(layer - 1, *plan.route(layer, m)) for layer, m in used if layer > 0)
        total += sum(gate(plan.num_layers - 1, *plan.tower(t)) for t in self.task_names)
        return int(total)
