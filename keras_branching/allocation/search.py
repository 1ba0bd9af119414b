"""`LearnedAllocation`: learns which components each task uses (Gumbel-Matrix routing).

Method 4 of the methods page: Maziarz et al., "Flexible Multi-task Networks
by Learning Parameter Allocation" (arXiv 1910.04915). The search model is
the *routed network*: every layer exists once and runs every task's batch
(`JointComponents`), and each routed layer ends in an `AllocationMask` that
learns, per task and component, the probability that the task uses the
component. It trains through `fit` on any backend: the mask logits get their
own learning rate through `ArchitectureOptimizer`, the temperature anneals
with `TemperatureSchedule`, and the paper's L2 weight decay is a
regularisation loss. The plan is the greedy `Allocation`.
"""

import keras

from keras_branching import naming
from keras_branching._validation import check_non_negative, check_positive
from keras_branching.allocation.builder import AllocationBuilder
from keras_branching.allocation.plan import Allocation
from keras_branching.builder import seeded_layers
from keras_branching.callbacks.temperature import TemperatureSchedule
from keras_branching.layers.allocation_mask import AllocationMask
from keras_branching.layers.joint_components import JointComponents
from keras_branching.optimizers import ArchitectureOptimizer, is_architecture_variable
from keras_branching.search import Search


def build_routed_network(
    builder,
    initial_probability=0.97,
    temperature=1.0,
    budget=None,
    budget_weight=1.0,
    seeds=None,
):
    """The routed network of `builder`: every component once, one `AllocationMask` per routed layer.

    Not compiled. Each shared layer is a `JointComponents` of one layer,
    each routed layer a `JointComponents` of its components (their outputs
    stacked) followed by an `AllocationMask`; inputs and outputs are dicts
    keyed by task. The structure is read back by walking `model.layers`
    (see `routed_masks`), so it survives a `.keras` reload.

    Args:
        builder: an `AllocationBuilder`.
        initial_probability, temperature, budget, budget_weight: the
            arguments of every `AllocationMask`.
        seeds: optional list of mask seeds, one per routed layer.

    Returns:
        A `keras.Model`.
    """
    inputs = builder.make_inputs()
    names = builder.task_names
    features = [inputs[t] for t in names]
    routed = 0
    for index, entry in enumerate(builder.layers):
        if not isinstance(entry, list):
            joint = JointComponents(
                [builder.make_layer(index)],
                "none",
                name=naming.allocation_layer_name(index, "joint"),
            )
            features = joint(features)
            continue
        components = [builder.make_layer(index, k) for k in range(len(entry))]
        joint = JointComponents(
            components, "stack", name=naming.allocation_layer_name(index, "components")
        )
        mask = AllocationMask(
            len(names),
            len(components),
            initial_probability=initial_probability,
            temperature=temperature,
            budget=budget,
            budget_weight=budget_weight,
            seed=None if seeds is None else seeds[routed],
            name=naming.allocation_layer_name(index, "allocation"),
        )
        features = mask(joint(features))
        routed += 1
    outputs = {t: builder.make_head(t)(x) for t, x in zip(names, features)}
    return keras.Model(builder.model_inputs(inputs), outputs, name="allocation_network")


def routed_masks(model):
    """The `AllocationMask`s of a routed network, in layer order (read from its graph)."""
    masks = [layer for layer in model.layers if isinstance(layer, AllocationMask)]
    if not masks:
        raise ValueError(
            "Expected a routed allocation network (from `LearnedAllocation`), with an "
            f"`AllocationMask` per routed layer. Received the model {model.name!r}, without any"
        )
    return masks


def read_allocation(model, tasks):
    """The greedy `Allocation` of a routed network whose tasks are `tasks`."""
    return Allocation(tasks, [mask.allocation() for mask in routed_masks(model)])


def _add_weight_decay(model, weight_decay, num_tasks):
    """The paper's L2 penalty as regularisation losses of the model's weights.

    `0.5 * weight_decay * num_tasks * ||w||^2` for every trainable weight but
    biases and architecture variables (the official code adds the penalty
    to every task's loss). Where the weight's layer has a matching
    `<weight name>_regularizer` setting (`kernel_regularizer` of `Dense` and
    convolutions, ...), that setting is set too, so the penalty is in the
    layer's config and survives a `.keras` save and reload of the network.
    """
    if not weight_decay:
        return
    regularizer = keras.regularizers.L2(0.5 * weight_decay * num_tasks)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        for variable in layer._trainable_variables:
            if is_architecture_variable(variable) or variable.name == "bias":
                continue
            variable.regularizer = regularizer
            setting = f"{variable.name}_regularizer"
            if hasattr(layer, setting):
                setattr(layer, setting, regularizer)


class LearnedAllocation(Search):
    """Learned parameter allocation (Maziarz et al. 2019) as a search.

    Trains the routed network of the builder (every component once, shared
    by every task that uses it; an `AllocationMask` per routed layer) with
    `fit`, then returns the greedy allocation: task `t` uses component `k`
    where its probability is at least 0.5. Build it with
    `result.build()` (fresh weights) or take the trained weights with
    `export_allocation_network(builder, search.model)`.

    What trains, on TensorFlow and JAX alike:

    - the weights with the builder's optimizer and the mask logits with a
      copy of it at `allocation_learning_rate` (`ArchitectureOptimizer`);
    - the temperature of every mask annealed before each step
      (`TemperatureSchedule`, which reads the optimizer's step, so a
      resumed search continues the schedule);
    - the paper's L2 weight decay, `0.5 * weight_decay * num_tasks *
      ||w||^2` on every weight but biases and mask logits, added to the loss
      as regularisation losses set on the variables (so it behaves as in the
      paper with Adam; the optimizer's decoupled `weight_decay`, AdamW-style,
      would be another regulariser, nearly inactive at the paper's 3e-4 and
      learning rate 1e-4).

    Interrupted work resumes exactly: run the search again with the same
    `keras.callbacks.BackupAndRestore`, or reload the routed network saved
    to `.keras` mid-search and continue it as the search trains it
    (`x, y, _ = search.prepare_data(x, y, None)`, then `model.fit(x, y,
    initial_epoch=..., callbacks=search.search_callbacks(model))`): the
    optimizer's step and so the temperature, the optimizers' state, the
    weight decay and the masks' noise state are all restored.

    `search(x, y, ...)` takes one `x` for every task (each task sees the
    same examples) or, for a builder with per-task inputs, a dict of
    per-task inputs keyed by task name (or by `builder.input_names`); one
    `x` is then given to every task's input. Arrays,
    or a `tf.data.Dataset` of `(x, y_dict)` (see
    `keras_branching.datasets.task_batches` for per-task examples).

    Args:
        builder: an `AllocationBuilder`.
        initial_probability: initial probability that a task uses a
            component, in (0, 1) (paper: 0.97).
        initial_temperature: the Gumbel-softmax temperature at step 0
            (paper: 50).
        min_temperature: its floor (paper: 0.5).
        temperature_schedule: a `TemperatureSchedule` schedule:
            `"inverse_sqrt"` (the paper's `max(min, tau0 / sqrt(step + 1))`),
            `"exponential"` or a callable `step -> temperature`.
        budget: optional fraction of each routed layer's components a task
            may use before it is penalised (see `AllocationMask`).
        budget_weight: weight of the budget penalty.
        allocation_learning_rate: learning rate of the mask logits
            (paper: 2e-3, twenty times that of the weights).
        weight_decay: L2 coefficient, >= 0 (paper: 3e-4).
        seed: optional int; seeds the weights and mask `i`'s noise
            (`seed + i`).

    Example:

    >>> import keras, numpy as np
    >>> from keras_branching import Task
    >>> dense = lambda: keras.layers.Dense(4, activation="relu")
    >>> builder = AllocationBuilder((3,), [[dense, dense]],
    ...     [Task(t, head=lambda: keras.layers.Dense(1), loss="mse") for t in "ab"])
    >>> search = LearnedAllocation(builder, seed=0)
    >>> x = np.zeros((16, 3), "float32")
    >>> result = search.search(x, {"a": np.zeros((16, 1)), "b": np.ones((16, 1))},
    ...                        epochs=1, verbose=0)
    >>> result.plan.num_components
    (2,)
    """

    builder_class = AllocationBuilder

    def __init__(
        self,
        builder,
        initial_probability=0.97,
        initial_temperature=50.0,
        min_temperature=0.5,
        temperature_schedule="inverse_sqrt",
        budget=None,
        budget_weight=1.0,
        allocation_learning_rate=2e-3,
        weight_decay=3e-4,
        seed=None,
    ):
        super().__init__(builder, seed=seed)
        # Validated by the objects that use them, with their own messages.
        AllocationMask(
            1,
            1,
            initial_probability=initial_probability,
            temperature=initial_temperature,
            budget=budget,
            budget_weight=budget_weight,
        )
        TemperatureSchedule(
            temperature_schedule,
            initial_temperature=initial_temperature,
            min_temperature=min_temperature,
        )
        self.initial_probability = float(initial_probability)
        self.initial_temperature = float(initial_temperature)
        self.min_temperature = float(min_temperature)
        self.temperature_schedule = temperature_schedule
        self.budget = None if budget is None else float(budget)
        self.budget_weight = float(budget_weight)
        self.allocation_learning_rate = check_positive(
            "allocation_learning_rate", allocation_learning_rate
        )
        self.weight_decay = check_non_negative("weight_decay", weight_decay)
        self.model = None

    # Search hooks.

    def optimizer(self):
        """A fresh `ArchitectureOptimizer`: the builder's optimizer and its copy for the logits."""
        weights = keras.optimizers.get(self.builder.fresh_optimizer())
        config = weights.get_config()
        config["learning_rate"] = self.allocation_learning_rate
        config["name"] = f"{config.get('name') or 'optimizer'}_allocation"
        return ArchitectureOptimizer(weights, weights.__class__.from_config(config))

    def build_search_model(self):
        """The compiled routed network."""
        seeds = [self.seed_for(i) for i in range(len(self.builder.routed_layers))]
        # The builder's `seed` (if any) seeds the components' initial weights.
        with seeded_layers(self.builder.seed, salt="allocation_search"):
            model = build_routed_network(
                self.builder,
                initial_probability=self.initial_probability,
                temperature=self.initial_temperature,
                budget=self.budget,
                budget_weight=self.budget_weight,
                seeds=None if self.seed is None else seeds,
            )
        _add_weight_decay(model, self.weight_decay, len(self.builder.task_names))
        return self.builder.compile(model, optimizer=self.optimizer())

    def search_callbacks(self, model):
        return [
            TemperatureSchedule(
                self.temperature_schedule,
                initial_temperature=self.initial_temperature,
                min_temperature=self.min_temperature,
            )
        ]

    def prepare_data(self, x, y, validation_data):
        """One input for every task becomes a dict of per-task inputs (the same examples)."""
        x = self._per_task(x)
        if isinstance(validation_data, (list, tuple)) and validation_data:
            validation_data = (self._per_task(validation_data[0]), *validation_data[1:])
        elif validation_data is not None:
            validation_data = self._per_task(validation_data)
        return x, y, validation_data

    def _per_task(self, x):
        """`x` keyed by the model's input names (`builder.input_names`)."""
        if not self.builder.per_task_inputs:
            return x
        keys = self.builder.input_names
        if hasattr(x, "element_spec"):  # a tf.data.Dataset
            spec = x.element_spec
            inputs = spec[0] if isinstance(spec, tuple) else spec
            if isinstance(inputs, dict) and set(inputs) == set(keys.values()):
                return x
            per_task = isinstance(inputs, dict) and set(inputs) == set(keys)

            def rename(inputs, *rest):
                if per_task:
                    return ({keys[t]: v for t, v in inputs.items()}, *rest)
                return ({key: inputs for key in keys.values()}, *rest)

            return x.map(rename)
        if isinstance(x, dict) and set(x) == set(keys.values()):
            return x
        if isinstance(x, dict) and set(x) == set(keys):
            return {keys[t]: v for t, v in x.items()}
        return {key: x for key in keys.values()}

    def derive_plan(self, model):
        """The greedy allocation of the trained routed network."""
        return read_allocation(model, self.builder.task_names)

    def details(self, model):
        """The final probabilities (one task-by-component list per routed layer)."""
        return {
            "probabilities": [m.probabilities().tolist() for m in routed_masks(model)],
            "temperature": float(
                keras.ops.convert_to_numpy(routed_masks(model)[0].temperature_variable)
            ),
        }

    def get_config(self):
        schedule = self.temperature_schedule
        config = super().get_config()
        config.update(
            {
                "initial_probability": self.initial_probability,
                "initial_temperature": self.initial_temperature,
                "min_temperature": self.min_temperature,
                "temperature_schedule": schedule if isinstance(schedule, str) else repr(schedule),
                "budget": self.budget,
                "budget_weight": self.budget_weight,
                "allocation_learning_rate": self.allocation_learning_rate,
                "weight_decay": self.weight_decay,
            }
        )
        return config
