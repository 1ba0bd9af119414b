"""`SupernetRoute`: one searchable block of the share-routing supernet, with its policy."""

import itertools
import numbers

import keras
import numpy as np
from keras import ops

from keras_branching._validation import check_positive_int
from keras_branching.layers.gating import check_query_shape, check_same_shapes, gated_sum
from keras_branching.layers.seed_state import SeedStateSaving
from keras_branching.optimizers import mark_architecture_variable


def route_choices(num_inputs, num_queries, max_route_size=None):
    """Every `(route, query)` choice of a block: a non-empty route and a gate query.

    A route of one member has no gate, so it is one choice (with query 0),
    not one per query.

    Args:
        num_inputs: number of candidate members, >= 1.
        num_queries: number of candidate gate queries, >= 1.
        max_route_size: the largest route (default: `num_inputs`).

    Returns:
        A list of `(route, query)`: `route` a sorted tuple of member indices,
        `query` a query index.

    Example:

    >>> route_choices(2, 2)
    [((0,), 0), ((1,), 0), ((0, 1), 0), ((0, 1), 1)]
    """
    num_inputs = check_positive_int("num_inputs", num_inputs)
    num_queries = check_positive_int("num_queries", num_queries)
    largest = (
        num_inputs
        if max_route_size is None
        else check_positive_int("max_route_size", max_route_size)
    )
    choices = []
    for size in range(1, min(largest, num_inputs) + 1):
        for route in itertools.combinations(range(num_inputs), size):
            for query in range(num_queries) if size > 1 else [0]:
                choices.append((route, query))
    return choices


def _check_choices(choices, num_inputs, num_queries):
    if isinstance(choices, (str, bytes)) or not isinstance(choices, (list, tuple)) or not choices:
        raise ValueError(
            "Expected `choices` to be a non-empty list of (route, query) pairs. "
            f"Received: choices={choices!r}"
        )
    checked = []
    for choice in choices:
        ok = isinstance(choice, (list, tuple)) and len(choice) == 2
        route, query = choice if ok else ((), None)
        ok = ok and isinstance(route, (list, tuple)) and len(route) > 0
        ok = ok and all(
            isinstance(i, numbers.Integral) and not isinstance(i, bool) and 0 <= i < num_inputs
            for i in route
        )
        ok = ok and len(set(route)) == len(route)
        ok = ok and isinstance(query, numbers.Integral) and not isinstance(query, bool)
        ok = ok and 0 <= query < num_queries
        if not ok:
            raise ValueError(
                "Expected each choice to be a pair (route, query): a non-empty list of "
                f"distinct member indices in [0, {num_inputs}) and a query index in "
                f"[0, {num_queries}). Received: {choice!r}"
            )
        checked.append((tuple(sorted(int(i) for i in route)), int(query)))
    return checked


@keras.saving.register_keras_serializable(package="keras_branching")
class SupernetRoute(SeedStateSaving, keras.layers.Layer):
    """One searchable block of the share-routing supernet: every route, one policy.

    The layer in front of a sub-network (or a tower) in the weight-sharing
    supernet of `ShareRouting`. Its inputs are `num_queries` candidate gate
    queries and `num_inputs` candidate members (the sub-networks below);
    its *choices* are `(route, query)` pairs: a non-empty set of members,
    mixed by a softmax gate computed from one query. The layer holds one
    gate kernel and bias per query over all members, so every choice that
    uses a member's gate column, like every architecture that uses a
    sub-network, shares the same weights (gate kernels start at zero: a new
    gate mixes its members equally).

    Its policy is a categorical distribution over the choices,
    `softmax(policy_logits)` (initially uniform). In training
    (`training=True`) the layer draws one choice per call (per training
    step, shared by the batch) from the policy with `keras.random`; at
    inference it takes the most probable choice, so predictions and
    exported models are deterministic. `set_choice(index)` fixes the
    choice in both modes (`None` goes back to the policy).

    The policy logits are not trained by gradient: they are marked with
    `mark_architecture_variable` and non-trainable; `ShareRouting` updates
    them by REINFORCE with its own optimizer. The layer also keeps the
    moving `baseline` of its block's reward, the moving `reward_variance`
    around it and the number of updates `num_updates`, so that the whole
    search state is saved with the model's weights (the sampler's seed
    state included), and a search resumed by
    `keras.callbacks.BackupAndRestore` continues where it stopped.

    Args:
        num_inputs: number of candidate members, an int >= 1.
        num_queries: number of candidate gate queries, an int >= 1.
        choices: the `(route, query)` pairs of the search space, with
            member and query indices; default `route_choices(num_inputs,
            num_queries)`, every non-empty route.
        seed: optional int seed of the choice sampler.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a list of the `num_queries` query tensors (each
            `(batch, features)`), then the `num_inputs` member tensors (one
            shape).
        training: whether to sample a choice (True) or take the most
            probable one.

    Returns:
        The gated sum of the chosen route's members, of the members' shape.

    Raises:
        TypeError: for non-int sizes or seed.
        ValueError: for sizes < 1, invalid choices or wrong inputs.

    Example:

    >>> import numpy as np
    >>> layer = SupernetRoute(num_inputs=3, num_queries=1, seed=0)
    >>> q = np.ones((2, 4), "float32")
    >>> xs = [np.full((2, 2), float(i), "float32") for i in range(3)]
    >>> _ = layer([q, *xs])
    >>> layer.set_choice(layer.choices.index(((0, 2), 0)))
    >>> np.asarray(layer([q, *xs]))[0]  # zero kernels: mean of members 0 and 2
    array([1., 1.], dtype=float32)
    >>> layer.probabilities().round(3).tolist()  # uniform over the 7 routes
    [0.143, 0.143, 0.143, 0.143, 0.143, 0.143, 0.143]
    """

    def __init__(self, num_inputs, num_queries, choices=None, seed=None, **kwargs):
        num_inputs = check_positive_int("num_inputs", num_inputs)
        num_queries = check_positive_int("num_queries", num_queries)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise TypeError(f"Expected `seed` to be an int or None. Received: seed={seed!r}")
        if choices is None:
            choices = route_choices(num_inputs, num_queries)
        super().__init__(**kwargs)
        self.num_inputs = num_inputs
        self.num_queries = num_queries
        self.choices = _check_choices(choices, num_inputs, num_queries)
        self.seed = None if seed is None else int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        route_masks = np.zeros((len(self.choices), num_inputs), "float32")
        query_masks = np.zeros((len(self.choices), num_queries), "float32")
        for c, (route, query) in enumerate(self.choices):
            route_masks[c, list(route)] = 1.0
            query_masks[c, query] = 1.0
        self._route_masks, self._query_masks = route_masks, query_masks

    def _check_shapes(self, input_shapes):
        expected = self.num_queries + self.num_inputs
        if not isinstance(input_shapes, (list, tuple)) or len(input_shapes) != expected:
            count = len(input_shapes) if isinstance(input_shapes, (list, tuple)) else 1
            raise ValueError(
                f"Expected a list of {expected} tensors ({self.num_queries} queries, then "
                f"{self.num_inputs} members). Received {count} tensor(s)"
            )
        shapes = [tuple(s) for s in input_shapes]
        queries, members = shapes[: self.num_queries], shapes[self.num_queries :]
        for q, shape in enumerate(queries):
            check_query_shape(shape, f"query {q}")
        check_same_shapes(members, "member", "member")
        return queries, members

    def build(self, input_shapes):
        queries, _ = self._check_shapes(input_shapes)
        self.kernels, self.biases = [], []
        for q, shape in enumerate(queries):
            self.kernels.append(
                self.add_weight(
                    name=f"kernel_{q}", shape=(shape[-1], self.num_inputs), initializer="zeros"
                )
            )
            self.biases.append(
                self.add_weight(name=f"bias_{q}", shape=(self.num_inputs,), initializer="zeros")
            )
        self.policy_logits = mark_architecture_variable(
            self.add_weight(
                name="policy_logits",
                shape=(len(self.choices),),
                initializer="zeros",
                dtype="float32",
                trainable=False,
            )
        )
        state = {"dtype": "float32", "trainable": False, "initializer": "zeros", "shape": ()}
        self.baseline = self.add_weight(name="baseline", **state)
        self.reward_variance = self.add_weight(name="reward_variance", **state)
        self.num_updates = self.add_weight(name="num_updates", **state)
        self.forced_choice = self.add_weight(
            name="forced_choice",
            shape=(),
            dtype="int32",
            initializer=keras.initializers.Constant(-1),
            trainable=False,
        )

    def set_choice(self, index):
        """Fixes the choice to `choices[index]` (in training too); `None` frees it."""
        if index is None:
            index = -1
        elif (
            isinstance(index, bool)
            or not isinstance(index, numbers.Integral)
            or not (0 <= index < len(self.choices))
        ):
            raise ValueError(
                f"Expected `index` to be None or a choice index in [0, {len(self.choices)}). "
                f"Received: index={index!r}"
            )
        self.forced_choice.assign(int(index))

    def probabilities(self):
        """The policy, `softmax(policy_logits)`, as a float64 numpy array."""
        logits = np.asarray(ops.convert_to_numpy(self.policy_logits), "float64")
        exp = np.exp(logits - logits.max())
        return exp / exp.sum()

    def most_probable_choice(self):
        """The `(route, query)` of highest probability (the first one on ties)."""
        return self.choices[int(np.argmax(self.probabilities()))]

    def _choice(self, training):
        logits = ops.cast(self.policy_logits, "float32")
        if training:
            drawn = keras.random.categorical(
                ops.expand_dims(logits, 0), 1, seed=self.seed_generator
            )[0, 0]
        else:
            drawn = ops.argmax(logits)
        forced = ops.convert_to_tensor(self.forced_choice)
        return ops.where(forced >= 0, forced, ops.cast(drawn, "int32"))

    def call(self, inputs, training=None):
        if (
            not isinstance(inputs, (list, tuple))
            or len(inputs) != self.num_queries + self.num_inputs
        ):
            raise ValueError(
                f"Expected a list of {self.num_queries + self.num_inputs} tensors "
                f"({self.num_queries} queries, then {self.num_inputs} members). "
                f"Received: {inputs!r}"
            )
        queries, members = inputs[: self.num_queries], inputs[self.num_queries :]
        choice = self._choice(bool(training))
        route_mask = ops.take(ops.convert_to_tensor(self._route_masks), choice, axis=0)
        query_mask = ops.take(ops.convert_to_tensor(self._query_masks), choice, axis=0)
        logits = 0.0
        for q, (query, kernel, bias) in enumerate(zip(queries, self.kernels, self.biases)):
            term = ops.matmul(ops.cast(query, "float32"), ops.cast(kernel, "float32"))
            logits = logits + query_mask[q] * (term + ops.cast(bias, "float32"))
        return gated_sum(logits, list(members), mask=route_mask)

    def compute_output_shape(self, input_shapes):
        _, members = self._check_shapes(input_shapes)
        return members[0]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_inputs": self.num_inputs,
                "num_queries": self.num_queries,
                "choices": [[list(route), query] for route, query in self.choices],
                "seed": self.seed,
            }
        )
        return config
