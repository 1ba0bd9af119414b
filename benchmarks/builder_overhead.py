"""Does the builder add training cost? Throughput of `build(tree)` vs hand-written Keras.

Trains the model that `BranchedModelBuilder.build(tree)` makes and the same
architecture written by hand as a plain functional Keras model (no
BranchPoint layers), alternating between them, and prints the median
training throughput (examples per second) of each and their ratio
(builder / hand-written; 1.0 means no overhead, target >= 0.97), also as the
median of paired (neighbouring) runs and as the ratio of the best runs, which
hold up when the machine's load changes between runs.

    python benchmarks/builder_overhead.py [--repeats 7] [--examples 32768]
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras_branching  # noqa: F401, E402  (first: it imports TensorFlow without start-up noise)

# isort: split

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_branching import BranchedModelBuilder, BranchingTree, Task  # noqa: E402

TASKS = ["a", "b", "c", "d"]
PARTITIONS = [[TASKS], [["a", "b"], ["c", "d"]], [["a"], ["b"], ["c", "d"]]]


def builder_model(input_dim, width):
    builder = BranchedModelBuilder(
        (input_dim,),
        [lambda: keras.layers.Dense(width, activation="relu")] * 3,
        [Task(t, head=lambda: keras.layers.Dense(1), loss="mse") for t in TASKS],
    )
    return builder.build(BranchingTree(TASKS, PARTITIONS))


def hand_written_model(input_dim, width):
    def dense():
        return keras.layers.Dense(width, activation="relu")

    inputs = keras.Input((input_dim,))
    trunk = dense()(inputs)
    ab, cd = dense()(trunk), dense()(trunk)
    features = {"a": dense()(ab), "b": dense()(ab)}
    features["c"] = features["d"] = dense()(cd)
    outputs = {t: keras.layers.Dense(1, name=f"out_{t}")(features[t]) for t in TASKS}
    model = keras.Model(inputs, outputs)
    model.compile("adam", loss={t: "mse" for t in TASKS}, loss_weights={t: 1.0 for t in TASKS})
    return model


def throughput(model, x, y, batch_size):
    start = time.perf_counter()
    model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)
    return len(x) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--examples", type=int, default=32768)
    parser.add_argument("--input-dim", type=int, default=128)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.examples, args.input_dim)).astype("float32")
    y = {t: rng.standard_normal((args.examples, 1)).astype("float32") for t in TASKS}
    models = {
        "builder": builder_model(args.input_dim, args.width),
        "hand-written": hand_written_model(args.input_dim, args.width),
    }
    assert models["builder"].count_params() == models["hand-written"].count_params()
    for model in models.values():  # warm-up: tracing and compilation
        throughput(
            model,
            x[: args.batch_size * 4],
            {t: v[: args.batch_size * 4] for t, v in y.items()},
            args.batch_size,
        )
    runs = {name: [] for name in models}
    for _ in range(args.repeats):  # alternate, so drifts in machine load hit both
        for name, model in models.items():
            runs[name].append(throughput(model, x, y, args.batch_size))
    medians = {name: statistics.median(r) for name, r in runs.items()}
    best = {name: max(r) for name, r in runs.items()}
    # Runs alternate, so each builder run has a hand-written neighbour taken
    # under the same machine load; the median of those paired ratios is
    # robust to load that changes between runs (seen on shared machines).
    paired = [b / h for b, h in zip(runs["builder"], runs["hand-written"])]
    print(
        f"{args.examples} examples, batch {args.batch_size}, 3 Dense({args.width}) blocks, "
        f"4 tasks, {args.repeats} runs each, {models['builder'].count_params():,} params"
    )
    for name, median in medians.items():
        print(
            f"  {name:<13} median {median:10,.0f} examples/s, best {best[name]:10,.0f}  (runs: "
            + ", ".join(f"{r:,.0f}" for r in runs[name])
            + ")"
        )
    print(f"  ratio builder / hand-written, median of paired runs: {statistics.median(paired):.3f}")
    best_ratio = best["builder"] / best["hand-written"]
    median_ratio = medians["builder"] / medians["hand-written"]
    print(f"  ratio builder / hand-written, best runs:              {best_ratio:.3f}")
    print(f"  ratio builder / hand-written, medians:                {median_ratio:.3f}")


if __name__ == "__main__":
    main()
