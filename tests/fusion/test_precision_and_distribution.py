"""Fused tree models under a mixed precision policy and under `MirroredStrategy`."""

import textwrap

import keras
import numpy as np

from keras_branching import BranchedModelBuilder, BranchingTree, Task
from keras_branching.fusion import is_fused, unfuse
from keras_branching.layers.stacked import StackedBlock
from tests.fresh_process import REPO, run_python

TASKS = ["a", "b", "c", "d"]
TREE = BranchingTree(TASKS, [[TASKS], [["a", "b"], ["c", "d"]], [["a"], ["b"], ["c", "d"]]])


def make_builder():
    return BranchedModelBuilder(
        inputs=(6,),
        blocks=[
            lambda: keras.Sequential(
                [keras.layers.Dense(8), keras.layers.BatchNormalization(), keras.layers.ReLU()]
            ),
            lambda: keras.layers.Dense(8, activation="relu"),
            lambda: keras.Sequential([keras.layers.Dense(8), keras.layers.LayerNormalization()]),
        ],
        tasks=[Task(t, head=lambda: keras.layers.Dense(1), loss="mse") for t in TASKS],
        seed=0,
    )


def data(n=64):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 6)).astype("float32")
    return x, {t: rng.standard_normal((n, 1)).astype("float32") for t in TASKS}


def test_fused_model_under_mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        builder = make_builder()
        fused = builder.build(TREE, fuse=True)
        stacked = [layer for layer in fused.layers if isinstance(layer, StackedBlock)]
        assert stacked and all(s.compute_dtype == "float16" for s in stacked)
        assert all(w.dtype == "float32" for s in stacked for w in s.weights)
        x, y = data()
        history = fused.fit(x, y, epochs=1, batch_size=16, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        separate = unfuse(fused, builder)  # the same weights, BN statistics included
        assert not is_fused(separate)
        expected, actual = separate.predict(x, verbose=0), fused.predict(x, verbose=0)
        for task in TASKS:
            assert actual[task].dtype == expected[task].dtype == np.float16
            np.testing.assert_allclose(
                actual[task].astype("float32"), expected[task].astype("float32"), atol=2e-2
            )
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_fused_model_under_mirrored_strategy(tmp_path):
    script = tmp_path / "fused_mirrored.py"
    script.write_text(
        textwrap.dedent(
            """
            import tensorflow as tf

            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
            import numpy as np
            from tests.fusion.test_precision_and_distribution import TASKS, TREE, data, make_builder
            from keras_branching.fusion import is_fused, unfuse

            strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
            x, y = data()
            with strategy.scope():
                builder = make_builder()
                fused = builder.build(TREE, fuse=True)
                assert is_fused(fused)
                loss = fused.fit(x, y, epochs=1, batch_size=16, verbose=0).history["loss"][0]
                assert np.isfinite(loss), loss
                separate = unfuse(fused, builder)
            # Called outside the replicas: both read replica 0's BN moving
            # statistics (as Keras's BatchNormalization, they are not synced).
            expected, actual = separate(x, training=False), fused(x, training=False)
            for task in TASKS:
                np.testing.assert_allclose(actual[task], expected[task], atol=1e-5)
            print("ok")
            """
        )
    )
    assert run_python(script, REPO).strip().endswith("ok")
