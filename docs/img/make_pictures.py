"""Renders the PNGs of docs/pictures.md (about three minutes on 2 CPU cores).

Run from the repository root: `python docs/img/make_pictures.py [out_dir]`.
"""

import os
import sys

import keras_branching  # noqa: F401  (first: it imports TensorFlow without start-up noise)

# isort: split

import keras
import matplotlib
import numpy as np
import tensorflow as tf

matplotlib.use("Agg")

from keras_branching.affinity.rsa import TaskAffinity  # noqa: E402
from keras_branching.allocation import AllocationBuilder, task_batches  # noqa: E402
from keras_branching.builder import BranchedModelBuilder  # noqa: E402
from keras_branching.callbacks.architecture_logger import ArchitectureLogger  # noqa: E402
from keras_branching.callbacks.temperature import TemperatureSchedule  # noqa: E402
from keras_branching.datasets.synthetic import synthetic_tasks  # noqa: E402
from keras_branching.routing.search import ShareRouting  # noqa: E402
from keras_branching.supernet import build_supernet, derive_tree  # noqa: E402
from keras_branching.task import Task  # noqa: E402

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join("docs", "img")


def search(num_groups, tasks_per_group, widths, epochs, router_learning_rate=0.05, seed=0):
    keras.utils.set_random_seed(seed)
    x, y, groups = synthetic_tasks(
        num_groups, tasks_per_group, num_examples=512, input_dim=16, seed=seed
    )
    builder = BranchedModelBuilder(
        (16,),
        [lambda: keras.layers.Dense(8, activation="relu")] * len(widths),
        [Task(name, lambda: keras.layers.Dense(1), "mse") for name in y],
    )
    supernet = build_supernet(
        builder, widths, temperature=2.0, router_learning_rate=router_learning_rate, seed=0
    )
    logger = ArchitectureLogger()
    schedule = TemperatureSchedule("exponential", initial_temperature=2.0, decay_rate=0.98)
    supernet.fit(x, y, epochs=epochs, batch_size=64, verbose=0, callbacks=[logger, schedule])
    return logger, derive_tree(supernet), groups


def routing(num_groups, tasks_per_group, num_experts, epochs, seed=0):
    """Share routing on binary synthetic tasks (targets above their median)."""
    keras.utils.set_random_seed(seed)
    x, y, _ = synthetic_tasks(
        num_groups, tasks_per_group, num_examples=2500, input_dim=16, seed=seed
    )
    y = {t: (v > np.median(v)).astype("float32") for t, v in y.items()}
    tasks = [
        Task(t, lambda: keras.layers.Dense(1, activation="sigmoid"), "binary_crossentropy")
        for t in y
    ]
    search = ShareRouting(
        (16,),
        [lambda: keras.layers.Dense(8, activation="relu")] * 2,
        tasks,
        num_experts=num_experts,
        queries="all",
        max_route_size=2,
        seed=seed,
    )
    n = 1500
    train = {t: v[:n] for t, v in y.items()}
    validation = {t: v[n:] for t, v in y.items()}
    return search.search(
        x[:n], train, (x[n:], validation), epochs=epochs, batch_size=128, steps_per_update=4
    )


def allocation(num_groups, tasks_per_group, num_components, steps=300, seed=0):
    """Learned allocation of one layer of one-unit linear components (as in the tests)."""
    keras.utils.set_random_seed(seed)
    dim = 2 * num_groups
    x, y, groups = synthetic_tasks(num_groups, tasks_per_group, 2000, input_dim=dim, seed=seed)
    names = [t for g in groups for t in g]
    builder = AllocationBuilder(
        (dim,),
        [[lambda: keras.layers.Dense(1)] * num_components],
        [Task(n, lambda: keras.layers.Dense(1), "mse") for n in names],
        initial_probability=0.9,
        seed=seed,
    )
    model = builder.build(learning_rate=1e-2, allocation_learning_rate=2e-2, weight_decay=0.0)
    data = {n: tf.data.Dataset.from_tensor_slices((x, y[n])) for n in names}
    logger = ArchitectureLogger()
    model.fit(
        task_batches(data, 64, seed=seed),
        steps_per_epoch=steps // 6,
        epochs=6,
        verbose=0,
        shuffle=False,
        callbacks=[logger],
    )
    return builder, model, logger


def save(fig, name):
    """Saves a small PNG: moderate resolution, 256-colour palette."""
    from PIL import Image

    path = os.path.join(OUT, name)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)
    matplotlib.pyplot.close(fig)


def main():
    os.makedirs(OUT, exist_ok=True)
    small, small_tree, _ = search(2, 2, [1, 2, 4], epochs=8)
    save(small.plot(), "architecture_logger_4.png")
    save(small_tree.plot(), "tree_4.png")
    large, large_tree, _ = search(8, 5, [2, 4, 8, 16, 40], epochs=8, router_learning_rate=0.2)
    save(large.plot("router_block5"), "architecture_logger_40.png")
    save(large_tree.plot(), "tree_40.png")
    # An affinity of 6 tasks in two groups of three, at two branch points.
    rng = np.random.default_rng(0)
    tasks = [f"task_{g}{i}" for g in "ab" for i in range(3)]
    same = np.kron(np.eye(2), np.ones((3, 3)))
    values = []
    for level in (0.3, 0.6):
        noise = rng.uniform(0, 0.1, (6, 6))
        matrix = np.clip(0.2 + level * same + noise + noise.T, 0, 1)
        np.fill_diagonal(matrix, 1.0)
        values.append(matrix)
    save(TaskAffinity(tasks, np.array(values)).plot(), "affinity.png")
    save(routing(2, 2, num_experts=3, epochs=6).plot(), "routing_plan_4.png")
    save(routing(8, 5, num_experts=4, epochs=3).plot(), "routing_plan_40.png")
    builder, model, _ = allocation(2, 2, num_components=6)
    save(builder.plot(model), "allocation_4.png")
    builder, model, logger = allocation(8, 5, num_components=10)
    save(builder.plot(model), "allocation_40.png")
    save(logger.plot(), "architecture_logger_allocation_40.png")


if __name__ == "__main__":
    main()
