"""Small two-task regression problems for the weighting tests."""

import keras
import numpy as np

from keras_branching.builder import BranchedModelBuilder
from keras_branching.task import Task


def make_builder(num_tasks=2, learning_rate=0.01, input_dim=4):
    names = [chr(ord("a") + i) for i in range(num_tasks)]
    return BranchedModelBuilder(
        inputs=(input_dim,),
        blocks=[lambda: keras.layers.Dense(16, activation="tanh")],
        tasks=[Task(n, head=lambda: keras.layers.Dense(1), loss="mse") for n in names],
        optimizer=keras.optimizers.Adam(learning_rate),
    )


def regression_data(num_examples=256, input_dim=4, noise=(0.0, 0.0), scale=(1.0, 1.0), seed=0):
    """Targets `scale_t * (x . w) + noise_t * N(0, 1)`: one shared signal per task."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_examples, input_dim)).astype("float32")
    signal = x @ rng.standard_normal((input_dim, 1)).astype("float32")
    y = {}
    for i, (n, s) in enumerate(zip(noise, scale)):
        y[chr(ord("a") + i)] = (s * signal + n * rng.standard_normal((num_examples, 1))).astype(
            "float32"
        )
    return x, y
