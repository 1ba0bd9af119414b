import keras
import numpy as np
import pytest

from keras_branching.layers.group_gather import GatherGroups, SelectGroup, StackGroups
from keras_branching.layers.stacked import StackedBlock, block_weights, stack_reason
from tests.layer_checks import check_layer

G = 3


def _compare(make, shape, training):
    copies = [make() for _ in range(G)]
    for layer in copies:
        layer.build((None, *shape))
    x = np.random.default_rng(0).standard_normal((6, G, *shape)).astype("float32")
    stacked = StackedBlock(copies[0], G)
    stacked.build((None, G, *shape))
    for g, layer in enumerate(copies):
        stacked.set_group_weights(g, [np.asarray(w) for w in block_weights(layer)])
    y = np.asarray(stacked(x, training=training))
    for g, layer in enumerate(copies):
        expected = np.asarray(layer(x[:, g], training=training))
        np.testing.assert_allclose(y[:, g], expected, rtol=1e-5, atol=1e-5)
        for a, b in zip(stacked.group_weights(g), block_weights(layer)):
            np.testing.assert_allclose(a, np.asarray(b), rtol=1e-5, atol=1e-6)
    assert stacked.count_params() == sum(c.count_params() for c in copies)
    assert tuple(stacked.compute_output_shape((None, G, *shape)))[1:] == y.shape[1:]


KINDS = {
    "dense": (lambda: keras.layers.Dense(4, activation="relu"), (5,)),
    "dense_3d": (lambda: keras.layers.Dense(4, use_bias=False), (2, 5)),
    "conv2d": (lambda: keras.layers.Conv2D(4, 3, strides=2, padding="same"), (7, 7, 2)),
    "batch_norm": (lambda: keras.layers.BatchNormalization(), (5,)),
    "batch_norm_conv": (lambda: keras.layers.BatchNormalization(scale=False), (4, 4, 3)),
    "layer_norm": (lambda: keras.layers.LayerNormalization(), (5,)),
    "group_norm": (lambda: keras.layers.GroupNormalization(groups=2), (4, 4, 6)),
    "weightless": (
        lambda: keras.Sequential(
            [
                keras.layers.MaxPooling2D(),
                keras.layers.AveragePooling2D(1),
                keras.layers.Activation("tanh"),
                keras.layers.Dropout(0.5),  # the identity at inference
                keras.layers.Flatten(),
            ]
        ),
        (4, 4, 2),
    ),
    "sequential": (
        lambda: keras.Sequential(
            [
                keras.Input((6, 6, 2)),
                keras.layers.Conv2D(4, 3),
                keras.layers.BatchNormalization(),
                keras.layers.ReLU(),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(3),
            ]
        ),
        (6, 6, 2),
    ),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("training", [False, True])
def test_stacked_equals_separate_copies(kind, training):
    make, shape = KINDS[kind]
    if training and kind == "weightless":  # dropout noise differs in training
        make = lambda: keras.Sequential([keras.layers.MaxPooling2D(), keras.layers.Flatten()])  # noqa: E731
    _compare(make, shape, training)


def test_stacked_dropout_drops_in_training_only():
    stacked = StackedBlock(keras.layers.Dropout(0.5, seed=3), G)
    x = np.ones((16, G, 8), "float32")
    np.testing.assert_array_equal(np.asarray(stacked(x)), x)
    dropped = np.asarray(stacked(x, training=True))
    assert 0 < (dropped == 0).mean() < 1 and set(np.unique(dropped)) <= {0.0, 2.0}


def test_batch_norm_moving_statistics_follow_each_group():
    copies = [keras.layers.BatchNormalization(momentum=0.5) for _ in range(G)]
    x = np.random.default_rng(1).standard_normal((8, G, 3)).astype("float32") * [1, 2, 3]
    stacked = StackedBlock(copies[0], G)
    stacked(x, training=True)
    for g, layer in enumerate(copies):
        layer(x[:, g], training=True)
        for a, b in zip(stacked.group_weights(g), block_weights(layer)):
            np.testing.assert_allclose(a, np.asarray(b), rtol=1e-5, atol=1e-6)


def test_unstackable_blocks_are_rejected_with_the_reason():
    assert "LSTM" in stack_reason(keras.layers.LSTM(3))
    assert "kernel_regularizer" in stack_reason(keras.layers.Dense(3, kernel_regularizer="l2"))
    with pytest.raises(ValueError, match="Cannot stack block 'gru.*GRU"):
        StackedBlock(keras.layers.GRU(3), 2)
    with pytest.raises(ValueError, match="num_groups=0"):
        StackedBlock(keras.layers.Dense(3), 0)
    with pytest.raises(TypeError, match="block='dense'"):
        StackedBlock("dense", 2)


def test_stacked_block_passes_the_layer_checks(tmp_path):
    check_layer(
        lambda: StackedBlock(
            keras.Sequential([keras.layers.Dense(4), keras.layers.BatchNormalization()]), 2
        ),
        [(2, 3)],
        tmp_path,
        trainable_weights=4,
        non_trainable_weights=2,
    )


def test_stacked_dropout_keeps_its_seed_generator(tmp_path):
    check_layer(
        lambda: StackedBlock(
            keras.Sequential([keras.layers.Dense(4), keras.layers.Dropout(0.5, seed=1)]), 2
        ),
        [(2, 3)],
        tmp_path,
        trainable_weights=2,
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: StackGroups(2, groups=[["a"], ["b"]]),
        lambda: GatherGroups([1, 0, 1], groups=[["a"], ["b"], ["c"]]),
        lambda: SelectGroup(1),
    ],
)
def test_group_layers_pass_the_layer_checks(make, tmp_path):
    check_layer(make, [(2, 3)], tmp_path)


def test_group_layers_reject_bad_arguments():
    with pytest.raises(ValueError, match="indices=\\[\\]"):
        GatherGroups([])
    with pytest.raises(ValueError, match="indices=-1"):
        GatherGroups([0, -1])
    with pytest.raises(ValueError, match="groups=\\[\\['a'\\]\\]"):
        GatherGroups([0, 0], groups=[["a"]])
    with pytest.raises(ValueError, match="index='0'"):
        SelectGroup("0")
    with pytest.raises(ValueError, match="num_groups=0"):
        StackGroups(0)
    with pytest.raises(ValueError, match="indices=\\[0, 2\\]"):
        GatherGroups([0, 2])(np.zeros((1, 2, 3), "float32"))
