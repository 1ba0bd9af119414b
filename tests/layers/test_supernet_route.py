import keras
import numpy as np
import pytest

from keras_branching.layers.supernet_route import SupernetRoute, route_choices
from keras_branching.optimizers import is_architecture_variable
from tests.layer_checks import check_layer


def _inputs(num_queries=1, num_members=3):
    rng = np.random.default_rng(0)
    queries = [rng.standard_normal((4, 5)).astype("float32") for _ in range(num_queries)]
    members = [np.full((4, 2), float(i), "float32") for i in range(num_members)]
    return queries + members


def test_layer_checks(tmp_path):
    check_layer(
        lambda: SupernetRoute(3, 2, seed=3),
        [(5,), (4,)] + [(2,)] * 3,
        tmp_path,
        multi_input=True,
        trainable_weights=4,  # a gate kernel and bias per query
        non_trainable_weights=5,  # policy logits, baseline, variance, updates, forced choice
        seed_generators=1,
    )


def test_rank3_members(tmp_path):
    check_layer(
        lambda: SupernetRoute(2, 1, seed=0),
        [(3,), (5, 2), (5, 2)],
        tmp_path,
        multi_input=True,
        trainable_weights=2,
        non_trainable_weights=5,
        seed_generators=1,
    )


def test_choice_selects_members_and_query():
    layer = SupernetRoute(3, 2, seed=0)
    inputs = _inputs(num_queries=2)
    layer(inputs)
    layer.set_choice(layer.choices.index(((1,), 0)))
    np.testing.assert_allclose(np.asarray(layer(inputs)), 1.0)
    layer.set_choice(layer.choices.index(((0, 2), 1)))
    np.testing.assert_allclose(np.asarray(layer(inputs)), 1.0)  # zero kernels: the mean
    layer.biases[1].assign(np.array([0.0, 0.0, np.log(3.0)], "float32"))  # query 1 favours 2
    np.testing.assert_allclose(np.asarray(layer(inputs)), 1.5, rtol=1e-5)
    layer.set_choice(layer.choices.index(((0, 2), 0)))  # query 0 has its own gate
    np.testing.assert_allclose(np.asarray(layer(inputs)), 1.0)
    layer.set_choice(None)


def test_inference_takes_most_probable_choice_and_training_samples_the_policy():
    layer = SupernetRoute(3, 1, choices=[[[0], 0], [[1], 0], [[2], 0]], seed=0)
    inputs = _inputs()
    layer(inputs)
    layer.policy_logits.assign(np.array([0.0, 3.0, 0.0], "float32"))
    assert layer.most_probable_choice() == ((1,), 0)
    np.testing.assert_allclose(np.asarray(layer(inputs)), 1.0)
    drawn = [float(np.asarray(layer(inputs, training=True))[0, 0]) for _ in range(300)]
    counts = np.bincount(np.array(drawn, int), minlength=3) / len(drawn)
    np.testing.assert_allclose(counts, layer.probabilities(), atol=0.07)


def test_policy_state_is_marked_and_not_trained_by_gradient():
    layer = SupernetRoute(2, 1)
    layer(_inputs(num_members=2))
    assert is_architecture_variable(layer.policy_logits)
    assert not layer.policy_logits.trainable
    assert [w.name for w in layer.trainable_weights] == ["kernel_0", "bias_0"]


def test_sampler_state_is_saved_with_the_weights(tmp_path):
    def model():
        inputs = [keras.Input((5,)), keras.Input((2,)), keras.Input((2,))]
        return keras.Model(inputs, SupernetRoute(2, 1, seed=0, name="route")(inputs))

    first = model()
    data = _inputs(num_members=2)
    for _ in range(3):
        first(data, training=True)
    first.save_weights(tmp_path / "w.weights.h5")
    second = model()
    second.load_weights(tmp_path / "w.weights.h5")
    state = [
        keras.ops.convert_to_numpy(m.get_layer("route").seed_generator.state)
        for m in (first, second)
    ]
    np.testing.assert_array_equal(*state)


def test_route_choices():
    assert route_choices(3, 1, max_route_size=1) == [((0,), 0), ((1,), 0), ((2,), 0)]
    # 3 singletons, then 3 pairs and 1 triple with each of 2 queries.
    assert len(route_choices(3, 2)) == 3 + 4 * 2


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_inputs=0"):
        SupernetRoute(0, 1)
    with pytest.raises(TypeError, match="num_queries=1.0"):
        SupernetRoute(2, 1.0)
    with pytest.raises(TypeError, match="seed='a'"):
        SupernetRoute(2, 1, seed="a")
    with pytest.raises(ValueError, match=r"Received: \[\[3\], 0\]"):
        SupernetRoute(2, 1, choices=[[[3], 0]])
    with pytest.raises(ValueError, match="Expected a list of 3 tensors"):
        SupernetRoute(2, 1)([keras.Input((3,)), keras.Input((2,))])
    with pytest.raises(ValueError, match="same shape"):
        SupernetRoute(2, 1)([keras.Input((3,)), keras.Input((2,)), keras.Input((4,))])
    layer = SupernetRoute(2, 1)
    with pytest.raises(ValueError, match="index=5"):
        layer(_inputs(num_members=2))
        layer.set_choice(5)
