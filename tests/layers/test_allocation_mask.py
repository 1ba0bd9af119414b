import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_branching.layers.allocation_mask import AllocationMask
from tests.layer_checks import check_layer, requires_tensorflow


def _stacks(batch_sizes=(4, 3), components=3, features=5, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((b, components, features)).astype("float32") for b in batch_sizes]


def _set_logits(mask, on):
    """Sets the logits so that the greedy allocation is the boolean `on`."""
    logits = np.zeros((mask.num_tasks, mask.num_components, 2), "float32")
    logits[..., 0] = np.where(on, 2.0, -2.0)
    mask.logits.assign(logits)


def test_layer_checks(tmp_path):
    check_layer(
        lambda: AllocationMask(3, 2, seed=1),
        input_shapes=[(2, 4), (2, 4), (2, 4)],
        tmp_path=tmp_path,
        multi_input=True,
        trainable_weights=1,  # allocation logits
        non_trainable_weights=1,  # temperature
        seed_generators=1,
    )


def test_layer_checks_with_budget_and_images(tmp_path):
    check_layer(
        lambda: AllocationMask(2, 3, budget=0.5, temperature=2.0, seed=2),
        input_shapes=[(3, 4, 4, 2), (3, 4, 4, 2)],
        tmp_path=tmp_path,
        multi_input=True,
        trainable_weights=1,
        non_trainable_weights=1,
        seed_generators=1,
        losses=1,  # the budget penalty
    )


def test_initial_logits_and_temperature_weight():
    mask = AllocationMask(2, 3, initial_probability=0.8, temperature=5.0)
    logits = np.asarray(mask.logits)
    np.testing.assert_allclose(logits[..., 0], np.log(0.8), rtol=1e-6)
    np.testing.assert_allclose(logits[..., 1], np.log(0.2), rtol=1e-6)
    np.testing.assert_allclose(mask.probabilities(), 0.8, rtol=1e-6)
    assert [w.name for w in mask.trainable_weights] == ["allocation_logits"]
    temperature = [w for w in mask.non_trainable_weights if w.name == "temperature"]
    assert len(temperature) == 1 and float(temperature[0].numpy()) == 5.0


def test_inference_is_the_mean_of_allocated_components():
    mask = AllocationMask(2, 3)
    on = np.array([[True, False, True], [False, False, False]])
    _set_logits(mask, on)
    x = _stacks()
    outputs = mask(x, training=False)
    np.testing.assert_allclose(outputs[0], (x[0][:, 0] + x[0][:, 2]) / 2, rtol=1e-6)
    np.testing.assert_array_equal(outputs[1], np.zeros((3, 5), "float32"))
    np.testing.assert_array_equal(mask.allocation(), on)
    # Deterministic at inference.
    np.testing.assert_array_equal(mask(x, training=False)[0], outputs[0])


@requires_tensorflow
def test_training_samples_hard_allocations_with_straight_through_gradient():
    mask = AllocationMask(1, 4, initial_probability=0.5, temperature=1.0, seed=3)
    x = [np.ones((2, 4, 1), "float32") * np.arange(1, 5, dtype="float32")[None, :, None]]
    seen = set()
    for _ in range(30):
        y = np.asarray(mask(x, training=True)[0])[0, 0]
        # A mean of a non-empty subset of {1, 2, 3, 4}, or 0 when empty.
        seen.add(round(float(y), 5))
    assert len(seen) > 3
    subset_means = {0.0} | {
        round(float(np.mean([v for i, v in enumerate([1, 2, 3, 4]) if m >> i & 1])), 5)
        for m in range(1, 16)
    }
    assert seen <= subset_means
    x_var = tf.constant(x[0])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(mask([x_var], training=True)[0])
    grad = tape.gradient(loss, mask.logits)
    assert grad is not None and np.any(np.asarray(grad) != 0)


def test_budget_penalty():
    mask = AllocationMask(2, 4, initial_probability=0.9, budget=0.5, budget_weight=2.0)
    mask(_stacks(components=4), training=False)
    assert len(mask.losses) == 1
    # Each task expects 0.9 of the components: excess 0.4 per task.
    np.testing.assert_allclose(float(mask.losses[0]), 2.0 * 2 * 0.4, rtol=1e-5)
    free = AllocationMask(2, 4, initial_probability=0.9, budget=0.95)
    free(_stacks(components=4))
    np.testing.assert_allclose(float(free.losses[0]), 0.0)
    plain = AllocationMask(2, 4)
    plain(_stacks(components=4))
    assert not plain.losses


@requires_tensorflow
def test_temperature_weight_controls_soft_gradient():
    x = [np.ones((1, 2, 1), "float32") * np.array([1.0, -1.0], "float32")[None, :, None]]
    grads = []
    for temperature in (0.5, 50.0):
        mask = AllocationMask(1, 2, initial_probability=0.5, seed=0)
        mask.temperature_variable.assign(temperature)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(mask(x, training=True)[0])
        grads.append(np.abs(np.asarray(tape.gradient(loss, mask.logits))).sum())
    assert grads[0] > grads[1]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"initial_probability": 1.0}, ValueError, r"initial_probability=1.0"),
        ({"initial_probability": 0.0}, ValueError, r"initial_probability"),
        ({"initial_probability": -0.5}, ValueError, r"in \(0, 1\)"),
        ({"temperature": -1}, ValueError, r"Expected `temperature` > 0. Received: temperature=-1"),
        ({"budget": 1.5}, ValueError, r"budget=1.5"),
        ({"budget_weight": -1}, ValueError, r"budget_weight=-1"),
        ({"seed": "a"}, TypeError, r"seed='a'"),
        ({"num_tasks": 0}, ValueError, r"num_tasks"),
        ({"num_components": 2.5}, TypeError, r"num_components=2.5"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    arguments = {"num_tasks": 2, "num_components": 3, **kwargs}
    with pytest.raises(error, match=match):
        AllocationMask(**arguments)


def test_bad_inputs():
    mask = AllocationMask(2, 3)
    with pytest.raises(ValueError, match=r"num_components=3.*inputs\[1\] of shape \(3, 4, 5\)"):
        mask(_stacks(components=3)[:1] + _stacks(batch_sizes=(3,), components=4))
    with pytest.raises(ValueError, match=r"num_tasks=2 tensors.*Received 3 tensors"):
        mask(_stacks(batch_sizes=(4, 3, 2)))
    with pytest.raises(ValueError, match=r"list of 2 tensors"):
        mask(_stacks()[0])
    with pytest.raises(ValueError, match="num_tasks=2"):
        mask([keras.Input((3, 5))])  # symbolic calls are checked too


def test_noise_state_is_saved_so_a_reloaded_mask_draws_the_same_allocations(tmp_path):
    inputs = [keras.Input((3, 2)), keras.Input((3, 2))]
    mask = AllocationMask(2, 3, initial_probability=0.5, temperature=1.0, seed=4)
    model = keras.Model(inputs, mask(inputs))
    stacked = [np.ones((1, 3, 2), "float32")] * 2
    for _ in range(3):  # advance the noise
        model(stacked, training=True)
    path = str(tmp_path / "mask.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    again = reloaded.get_layer(mask.name)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(again.seed_generator.state),
        keras.ops.convert_to_numpy(mask.seed_generator.state),
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(again._sample(True)),
        keras.ops.convert_to_numpy(mask._sample(True)),
    )
