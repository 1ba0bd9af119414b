import keras
import numpy as np
import pytest

from keras_branching.layers.empty_allocation import EmptyAllocation
from tests import layer_checks


def _make():
    return EmptyAllocation((2, 3))


def test_layer_checks(tmp_path):
    # Every check but `check_fit_step`: the layer has no weights and its
    # output does not depend on its input's values, so nothing before it
    # gets a gradient (see `test_fit_beside_other_paths`).
    layer_checks.check_counts(
        _make,
        [(4,)],
        False,
        dict.fromkeys(
            ["trainable_weights", "non_trainable_weights", "seed_generators", "losses"], 0
        ),
    )
    layer_checks.check_config_round_trip(_make)
    layer_checks.check_symbolic_shapes(_make, [(4,)], multi_input=False)
    layer_checks.check_save_and_export(_make, [(4,)], multi_input=False, tmp_path=tmp_path)
    layer_checks.check_mixed_precision(_make, [(4,)], multi_input=False)


def test_fit_beside_other_paths():
    inputs = keras.Input((4,))
    empty = keras.layers.Flatten()(EmptyAllocation((2, 3))(inputs))
    outputs = keras.layers.Dense(1)(keras.layers.Concatenate()([inputs, empty]))
    model = keras.Model(inputs, outputs)
    model.compile("adam", "mse")
    history = model.fit(np.ones((8, 4)), np.zeros((8, 1)), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_zeros_of_the_batch_and_bad_shapes():
    out = EmptyAllocation((2, 3))(np.ones((4, 5), "float32"))
    assert tuple(out.shape) == (4, 2, 3) and not np.any(np.asarray(out))
    assert EmptyAllocation.from_config(EmptyAllocation((2, 3)).get_config()).shape == (2, 3)
    with pytest.raises(ValueError, match=r"shape=\(0,\)"):
        EmptyAllocation((0,))
    with pytest.raises(ValueError, match="shape=3"):
        EmptyAllocation(3)
