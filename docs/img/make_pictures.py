"""Renders the PNGs of docs/pictures.md (about three minutes on 2 CPU cores).

Run from the repository root: `python docs/img/make_pictures.py [out_dir]`.
`--quick` draws only the 4-task pictures, each search trained for a step or
two on fewer examples: a check that the script runs (about a minute; the
pictures then show untrained searches).
"""

import argparse
import os

import keras_branching  # noqa: F401  (first: it imports TensorFlow without start-up noise)

# isort: split

import keras
import matplotlib
import numpy as np
import tensorflow as tf

matplotlib.use("Agg")

from keras_branching.affinity.rsa import TaskAffinity  # noqa: E402
from keras_branching.allocation import AllocationBuilder, LearnedAllocation  # noqa: E402
from keras_branching.builder import BranchedModelBuilder  # noqa: E402
from keras_branching.callbacks.architecture_logger import ArchitectureLogger  # noqa: E402
from keras_branching.callbacks.temperature import TemperatureSchedule  # noqa: E402
from keras_branching.datasets.batches import task_batches  # noqa: E402
from keras_branching.datasets.synthetic import synthetic_tasks  # noqa: E402
from keras_branching.learn_to_branch import LearnToBranch  # noqa: E402
from keras_branching.routing import RoutingModelBuilder, ShareRouting  # noqa: E402
from keras_branching.task import Task  # noqa: E402


def search(num_groups, tasks_per_group, widths, epochs, router_learning_rate=0.05, seed=0):
    """Learning to branch on synthetic tasks; returns the router logger and the tree."""
    x, y, _ = synthetic_tasks(
        num_groups, tasks_per_group, num_examples=512, input_dim=16, seed=seed
    )
    builder = BranchedModelBuilder(
        (16,),
        [lambda: keras.layers.Dense(8, activation="relu")] * len(widths),
        [Task(name, lambda: keras.layers.Dense(1), "mse") for name in y],
    )
    schedule = TemperatureSchedule("exponential", initial_temperature=2.0, decay_rate=0.98)
    logger = ArchitectureLogger()
    result = LearnToBranch(
        builder,
        widths,
        router_learning_rate=router_learning_rate,
        temperature_schedule=schedule,
        seed=seed,
    ).search(x, y, epochs=epochs, batch_size=64, verbose=0, callbacks=[logger])
    return logger, result.plan


def routing(num_groups, tasks_per_group, num_experts, epochs, examples=2500, seed=0):
    """Share routing on binary synthetic tasks (targets above their median)."""
    x, y, _ = synthetic_tasks(
        num_groups, tasks_per_group, num_examples=examples, input_dim=16, seed=seed
    )
    y = {t: (v > np.median(v)).astype("float32") for t, v in y.items()}
    tasks = [
        Task(t, lambda: keras.layers.Dense(1, activation="sigmoid"), "binary_crossentropy")
        for t in y
    ]
    builder = RoutingModelBuilder(
        (16,), [lambda: keras.layers.Dense(8, activation="relu")] * 2, tasks
    )
    search = ShareRouting(
        builder,
        num_experts=num_experts,
        queries="all",
        max_route_size=2,
        steps_per_update=4,
        seed=seed,
    )
    n = int(0.6 * examples)
    train = {t: v[:n] for t, v in y.items()}
    validation = {t: v[n:] for t, v in y.items()}
    return search.search(
        x[:n], train, validation_data=(x[n:], validation), epochs=epochs, batch_size=128, verbose=0
    )


def allocation(num_groups, tasks_per_group, num_components, steps=300, seed=0):
    """Learned allocation of one layer of one-unit linear components (as in the tests)."""
    dim = 2 * num_groups
    x, y, groups = synthetic_tasks(num_groups, tasks_per_group, 2000, input_dim=dim, seed=seed)
    names = [t for g in groups for t in g]
    builder = AllocationBuilder(
        dict.fromkeys(names, (dim,)),  # one input per task: each task its own batches
        [[lambda: keras.layers.Dense(1)] * num_components],
        [Task(n, lambda: keras.layers.Dense(1), "mse") for n in names],
        optimizer=keras.optimizers.Adam(1e-2),
    )
    search = LearnedAllocation(
        builder,
        initial_probability=0.9,
        allocation_learning_rate=2e-2,
        weight_decay=0.0,
        seed=seed,
    )
    data = {n: tf.data.Dataset.from_tensor_slices((x, y[n])) for n in names}
    logger = ArchitectureLogger()
    epochs = min(6, steps)
    result = search.search(
        task_batches(data, 64, seed=seed),
        steps_per_epoch=steps // epochs,
        epochs=epochs,
        verbose=0,
        callbacks=[logger],
    )
    return result, logger


def save(fig, out, name):
    """Saves a small PNG: moderate resolution, 256-colour palette."""
    from PIL import Image

    path = os.path.join(out, name)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)
    matplotlib.pyplot.close(fig)


def affinity_example():
    """An affinity of 6 tasks in two groups of three, at two branch points."""
    rng = np.random.default_rng(0)
    tasks = [f"task_{g}{i}" for g in "ab" for i in range(3)]
    same = np.kron(np.eye(2), np.ones((3, 3)))
    values = []
    for level in (0.3, 0.6):
        noise = rng.uniform(0, 0.1, (6, 6))
        matrix = np.clip(0.2 + level * same + noise + noise.T, 0, 1)
        np.fill_diagonal(matrix, 1.0)
        values.append(matrix)
    return TaskAffinity(tasks, np.array(values))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=os.path.join("docs", "img"))
    parser.add_argument(
        "--quick",
        action="store_true",
        help="only the 4-task pictures, each search trained for a step or two",
    )
    args = parser.parse_args(argv)
    out, quick = args.out, args.quick
    os.makedirs(out, exist_ok=True)
    epochs = 1 if quick else 8
    small, small_tree = search(2, 2, [1, 2, 4], epochs=epochs)
    save(small.plot(), out, "architecture_logger_4.png")
    save(small_tree.plot(), out, "tree_4.png")
    if not quick:
        large, large_tree = search(8, 5, [2, 4, 8, 16, 40], epochs=8, router_learning_rate=0.2)
        save(large.plot("router_block5"), out, "architecture_logger_40.png")
        save(large_tree.plot(), out, "tree_40.png")
    save(affinity_example().plot(), out, "affinity.png")
    if quick:
        plan = routing(2, 2, num_experts=3, epochs=2, examples=640)
    else:
        plan = routing(2, 2, num_experts=3, epochs=6)
    save(plan.plot(), out, "routing_plan_4.png")
    if not quick:
        save(routing(8, 5, num_experts=4, epochs=3).plot(), out, "routing_plan_40.png")
    result, _ = allocation(2, 2, num_components=6, steps=2 if quick else 300)
    save(result.plot(probabilities=result.details["probabilities"]), out, "allocation_4.png")
    if not quick:
        result, logger = allocation(8, 5, num_components=10)
        save(result.plot(probabilities=result.details["probabilities"]), out, "allocation_40.png")
        save(logger.plot(), out, "architecture_logger_allocation_40.png")


if __name__ == "__main__":
    main()
