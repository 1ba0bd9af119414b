import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_branching.layers.gumbel_router import GumbelRouter
from tests.layer_checks import check_layer


def _parents(num_parents=3, shape=(4, 5)):
    # Parent p is the constant p + 1, so a child's value says which parent it read.
    return [np.full(shape, p + 1, "float32") for p in range(num_parents)]


@pytest.mark.parametrize("hard", [True, False])
def test_layer_checks(tmp_path, hard):
    check_layer(
        lambda: GumbelRouter(3, temperature=0.5, hard=hard, seed=1),
        [(5,), (5,)],
        tmp_path,
        multi_input=True,
        trainable_weights=1,  # router logits
        non_trainable_weights=1,  # temperature
        seed_generators=1,
    )


def test_weights():
    router = GumbelRouter(4)
    router(_parents(3))
    assert tuple(router.router_logits.shape) == (4, 3)
    assert router.router_logits.trainable
    assert not router.temperature_variable.trainable
    assert router.temperature_variable.name == "temperature"
    assert [w.name for w in router.trainable_weights] == ["router_logits"]
    np.testing.assert_allclose(router.parent_probabilities(), np.full((4, 3), 1 / 3))


def test_inference_takes_argmax_parent():
    router = GumbelRouter(3, seed=0)
    parents = _parents(3)
    router(parents)
    router.router_logits.assign(np.array([[0, 5, 0], [9, 0, 1], [0, 1, 2]], "float32"))
    for _ in range(2):  # deterministic: no noise without training
        children = router(parents, training=False)
        assert [float(np.asarray(c)[0, 0]) for c in children] == [2.0, 1.0, 3.0]
    np.testing.assert_array_equal(np.asarray(router(parents)[0]), parents[1])


def test_training_hard_sample_is_one_parent_and_follows_logits():
    router = GumbelRouter(2, temperature=1.0, seed=3)
    parents = _parents(3)
    router(parents)
    router.router_logits.assign(np.array([[0, 0, 0], [0, 8, 0]], "float32"))
    picks = []
    for _ in range(200):
        children = router(parents, training=True)
        for child in children:
            value = np.asarray(child)
            # One-hot forward: exactly one parent's values, not a mix.
            assert value[0, 0] in (1.0, 2.0, 3.0)
            np.testing.assert_array_equal(value, np.full_like(value, value[0, 0]))
        picks.append([int(np.asarray(c)[0, 0]) - 1 for c in children])
    picks = np.array(picks)
    # Child 0 has uniform logits: it visits every parent. Child 1 prefers parent 1.
    assert set(picks[:, 0]) == {0, 1, 2}
    assert np.mean(picks[:, 1] == 1) > 0.95


def test_training_soft_sample_mixes():
    router = GumbelRouter(1, temperature=100.0, hard=False, seed=0)
    value = np.asarray(router(_parents(2), training=True)[0])
    # At a high temperature the soft sample is close to the uniform mix, 1.5.
    assert 1.3 < value[0, 0] < 1.7


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="uses tf.GradientTape")
def test_straight_through_gradient_reaches_logits():
    router = GumbelRouter(2, temperature=1.0, seed=0)
    parents = [tf.constant(p) for p in _parents(3)]
    router(parents)
    with tf.GradientTape() as tape:
        loss = sum(tf.reduce_sum(c) for c in router(parents, training=True))
    grad = tape.gradient(loss, router.router_logits.value)
    assert grad is not None
    assert np.all(np.isfinite(grad.numpy())) and np.any(grad.numpy() != 0)


def test_same_seed_same_samples():
    def draws(seed):
        router = GumbelRouter(4, seed=seed)
        parents = _parents(5)
        router(parents)
        return [
            [float(np.asarray(c)[0, 0]) for c in router(parents, training=True)] for _ in range(5)
        ]

    assert draws(7) == draws(7)


def test_temperature_variable_changes_sampling_without_rebuild():
    router = GumbelRouter(1, hard=False, seed=0)
    parents = _parents(2)
    router(parents)
    router.temperature_variable.assign(1000.0)
    value = float(np.asarray(router(parents, training=True)[0])[0, 0])
    assert abs(value - 1.5) < 0.01


def test_single_parent():
    children = GumbelRouter(2)([np.ones((2, 3), "float32")], training=True)
    for c in children:
        np.testing.assert_array_equal(np.asarray(c), np.ones((2, 3)))


def test_compute_output_shape():
    router = GumbelRouter(3)
    assert router.compute_output_shape([(None, 4, 2), (None, 4, 2)]) == [(None, 4, 2)] * 3


def test_mixed_precision_logits_stay_float32():
    keras.config.set_dtype_policy("mixed_float16")
    router = GumbelRouter(2)
    children = router([keras.ops.ones((2, 3), "float16")] * 2, training=True)
    assert router.router_logits.dtype == "float32"
    assert keras.backend.standardize_dtype(children[0].dtype) == "float16"


@pytest.mark.parametrize("bad", [0, -1])
def test_rejects_num_children_below_one(bad):
    with pytest.raises(ValueError, match=rf"num_children={bad}"):
        GumbelRouter(bad)


def test_rejects_non_int_num_children():
    with pytest.raises(TypeError, match="num_children=2.0"):
        GumbelRouter(2.0)


@pytest.mark.parametrize("bad", [0, -1, 0.0, float("nan"), "1"])
def test_rejects_temperature_not_above_zero(bad):
    with pytest.raises(ValueError, match=r"Expected `temperature` > 0. Received: temperature="):
        GumbelRouter(2, temperature=bad)


def test_rejects_bad_hard_and_seed():
    with pytest.raises(TypeError, match="hard=1"):
        GumbelRouter(2, hard=1)
    with pytest.raises(TypeError, match="seed='a'"):
        GumbelRouter(2, seed="a")


def test_rejects_parents_of_different_shapes():
    with pytest.raises(ValueError, match=r"same shape.*\(2, 3\).*\(2, 4\)"):
        GumbelRouter(2)([np.ones((2, 3), "float32"), np.ones((2, 4), "float32")])


def test_rejects_parents_of_different_shapes_symbolic():
    with pytest.raises(ValueError, match="same shape"):
        GumbelRouter(2)([keras.Input((3,)), keras.Input((4,))])


def test_rejects_single_tensor():
    with pytest.raises(TypeError, match="list of parent tensors"):
        GumbelRouter(2)(np.ones((2, 3), "float32"))


def test_parent_probabilities_before_build():
    with pytest.raises(ValueError, match="not built"):
        GumbelRouter(2, name="r").parent_probabilities()


def test_parent_probabilities_are_softmax():
    router = GumbelRouter(2)
    router(_parents(2))
    router.router_logits.assign(np.array([[0.0, np.log(3.0)], [1.0, 1.0]], "float32"))
    np.testing.assert_allclose(router.parent_probabilities(), [[0.25, 0.75], [0.5, 0.5]], rtol=1e-6)


def test_usage_penalty_is_zero_when_even_and_grows_with_crowding():
    router = GumbelRouter(4, usage_penalty=0.5)
    router(_parents(2), training=True)
    assert float(router.usage_imbalance()) == pytest.approx(0.0)
    assert len(router.losses) == 1 and float(router.losses[0]) == pytest.approx(0.0)
    router.router_logits.assign(np.array([[9.0, -9.0]] * 4, "float32"))  # all on parent 0
    assert float(router.usage_imbalance()) == pytest.approx(1.0, abs=1e-5)  # P - 1
    router(_parents(2), training=True)
    assert float(router.losses[0]) == pytest.approx(0.5, abs=1e-5)
    router(_parents(2), training=False)
    assert not router.losses  # only in training
    assert router.get_config()["usage_penalty"] == 0.5


def test_usage_penalty_off_by_default_adds_no_loss():
    router = GumbelRouter(3)
    router(_parents(3), training=True)
    assert not router.losses


@pytest.mark.parametrize("bad", [-0.1, float("nan"), "1", True])
def test_rejects_bad_usage_penalty(bad):
    with pytest.raises(ValueError, match=r"Expected `usage_penalty` to be a finite number >= 0"):
        GumbelRouter(2, usage_penalty=bad)


def test_noise_state_is_saved_so_a_reloaded_router_draws_the_same_samples(tmp_path):
    # A search resumed from a `.keras` checkpoint draws what an uninterrupted one would.
    inputs = [keras.Input((5,)), keras.Input((5,))]
    router = GumbelRouter(3, temperature=1.0, hard=False, seed=4)
    model = keras.Model(inputs, router(inputs))
    parents = _parents(2, shape=(1, 5))
    for _ in range(3):  # advance the noise
        model(parents, training=True)
    path = str(tmp_path / "router.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(reloaded.get_layer(router.name).seed_generator.state),
        keras.ops.convert_to_numpy(router.seed_generator.state),
    )
    for a, b in zip(reloaded(parents, training=True), model(parents, training=True)):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
