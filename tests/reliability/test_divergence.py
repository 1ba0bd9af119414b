"""A search that diverges stops with `DivergenceError`; it never returns a plan.

Every search (`AffinityBranching`, `LearnToBranch`, `ShareRouting`,
`LearnedAllocation`) is driven into divergence in several ways: a huge
learning rate (the loss becomes inf or NaN), a block weight or an
architecture variable (router logits, allocation logits, the routing
policy) set to NaN while the reported loss stays finite. Each time the
error names the epoch and suggests a cause, no plan comes back and the
search's `result` is None, also after an earlier successful search.
"""

import keras
import numpy as np
import pytest

import keras_branching as kb
from keras_branching.optimizers import is_architecture_variable
from keras_branching.search import DivergenceError

METHODS = ["affinity", "learn_to_branch", "share_routing", "allocation"]


def _problem():
    x, y, _ = kb.datasets.synthetic_tasks(2, 1, num_examples=160, input_dim=8, seed=0)
    return x, y


def _tasks(y):
    return [kb.Task(t, head=lambda: keras.layers.Dense(1), loss="mse") for t in y]


def _dense():
    return keras.layers.Dense(4, activation="relu")


def _search(method, y, optimizer="adam", seed=1):
    """A small search of `method`, built as `tests/test_search_protocol.py` does."""
    tasks = _tasks(y)
    if method == "affinity":
        builder = kb.BranchedModelBuilder((8,), [_dense] * 2, tasks, optimizer=optimizer)
        return kb.AffinityBranching(builder, num_samples=16, seed=seed)
    if method == "learn_to_branch":
        builder = kb.BranchedModelBuilder((8,), [_dense] * 2, tasks, optimizer=optimizer)
        return kb.LearnToBranch(builder, widths=[1, 2], seed=seed)
    if method == "share_routing":
        builder = kb.RoutingModelBuilder((8,), [_dense] * 2, tasks, optimizer=optimizer)
        return kb.ShareRouting(
            builder,
            num_experts=2,
            warmup_epochs=0,
            steps_per_update=2,
            samples_per_update=2,
            seed=seed,
        )
    builder = kb.AllocationBuilder((8,), [[_dense] * 2] * 2, tasks, optimizer=optimizer)
    return kb.LearnedAllocation(builder, seed=seed)


def _block_weight(model):
    """A kernel of a block (not an architecture variable, not a head)."""
    for variable in model.trainable_variables:
        if not is_architecture_variable(variable) and len(variable.shape) == 2:
            return variable
    raise AssertionError("no block kernel found")


def _architecture_variable(model):
    for variable in model.variables:
        if is_architecture_variable(variable):
            return variable
    return None


class _SetNaN(keras.callbacks.Callback):
    """At the end of epoch `epoch` (0-based), sets one entry of a variable to NaN.

    It runs before the search's own callbacks, so the epoch's reported loss
    (computed before) stays finite while the weights are not.
    """

    def __init__(self, pick, epoch=0):
        super().__init__()
        self.pick, self.epoch = pick, epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            variable = self.pick(self.model)
            value = np.array(keras.ops.convert_to_numpy(variable))
            value.reshape(-1)[0] = np.nan
            variable.assign(value)


def _assert_no_plan(search, error, epoch):
    message = str(error.value)
    assert f"epoch {epoch}" in message, message
    assert "learning rate" in message or "NaN" in message, message
    assert search.result is None


@pytest.mark.parametrize("method", METHODS)
def test_huge_learning_rate(method):
    x, y = _problem()
    search = _search(method, y, optimizer=keras.optimizers.SGD(1e12))
    with pytest.raises(DivergenceError, match=r"diverged in epoch 1.*lower learning rate") as error:
        search.search(x, y, epochs=2, batch_size=40, verbose=0)
    _assert_no_plan(search, error, 1)


@pytest.mark.parametrize("method", METHODS)
def test_nan_block_weight_with_a_finite_loss_after_a_good_search(method):
    """Also: the failed second search keeps neither the first plan nor its model."""
    x, y = _problem()
    search = _search(method, y)
    first = search.search(x, y, epochs=1, batch_size=40, verbose=0)
    assert search.result is first
    first_model = search.model
    nan = _SetNaN(_block_weight, epoch=1)
    with pytest.raises(DivergenceError, match=r"epoch 2.*is not finite although") as error:
        search.search(x, y, epochs=2, batch_size=40, callbacks=[nan], verbose=0)
    _assert_no_plan(search, error, 2)
    assert search.model is not first_model  # the failed run's model
    assert all(np.isfinite(search.model.history.history["loss"]))


@pytest.mark.parametrize("method", ["learn_to_branch", "share_routing", "allocation"])
def test_nan_architecture_variable(method):
    """Router logits, the routing policy, allocation logits: the guard sees them."""
    x, y = _problem()
    search = _search(method, y)
    nan = _SetNaN(_architecture_variable, epoch=0)
    with pytest.raises(DivergenceError, match="diverged in epoch 1") as error:
        search.search(x, y, epochs=1, batch_size=40, callbacks=[nan], verbose=0)
    _assert_no_plan(search, error, 1)
    assert _architecture_variable(search.model) is not None


class _NaNInEpoch(keras.callbacks.Callback):
    """Sets every weight to NaN after the first batch of epoch `epoch`."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch, self.current = epoch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == 0:
            sync = getattr(self.model, "jax_state_sync", None)
            if sync is not None:
                sync()
            for variable in self.model.trainable_variables:
                if not is_architecture_variable(variable):
                    variable.assign(np.full(variable.shape, np.nan, "float32"))


def test_share_routing_policy_update_on_a_diverged_supernet_is_a_divergence_error():
    """The policy update inside an epoch scores NaN predictions: DivergenceError, epoch named."""
    x, y = _problem()
    search = _search("share_routing", y)
    with pytest.raises(DivergenceError, match=r"epoch 2: the supernet's predictions for task"):
        search.search(x, y, epochs=2, batch_size=40, callbacks=[_NaNInEpoch(1)], verbose=0)
    assert search.result is None


def test_share_routing_nan_policy_stops_the_next_policy_update():
    x, y = _problem()
    search = _search("share_routing", y)

    class NaNPolicy(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:  # runs just before the policy update of this batch
                layer = next(iter(search.routes(self.model).values()))
                layer.policy_logits.assign(np.full(layer.policy_logits.shape, np.nan, "float32"))

    label = search.block_label(search.blocks[0])
    with pytest.raises(DivergenceError, match=f"epoch 1: the policy of '{label}'"):
        search.search(x, y, epochs=1, batch_size=40, callbacks=[NaNPolicy()], verbose=0)
    assert search.result is None


def test_share_routing_huge_policy_learning_rate_stays_finite_or_stops():
    """A policy learning rate far too high saturates the policy; it never returns NaN."""
    x, y = _problem()
    search = _search("share_routing", y)
    search.policy_learning_rate = 1e30
    try:
        result = search.search(x, y, epochs=1, batch_size=40, verbose=0)
    except DivergenceError as error:
        assert "epoch" in str(error) and search.result is None
    else:
        for p in result.details["probabilities"].values():
            assert np.all(np.isfinite(p))


def test_divergence_with_validation_data_names_val_loss():
    x, y = _problem()
    search = _search("learn_to_branch", y, optimizer=keras.optimizers.SGD(1e12))
    with pytest.raises(DivergenceError, match="val_loss"):
        search.search(
            x[:120],
            {t: v[:120] for t, v in y.items()},
            validation_data=(x[120:], {t: v[120:] for t, v in y.items()}),
            epochs=1,
            batch_size=32,
            verbose=0,
        )
    assert search.result is None
