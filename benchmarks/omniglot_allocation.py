"""Learned parameter allocation on 20 Omniglot alphabets (Maziarz et al. 2019).

Searches the allocation in the paper's setup (methods.md section 4) with
`LearnedAllocation`, exports the routed network at its best validation
epoch to the static network of its allocation (trained weights), and prints
the mean test accuracy over the 20 tasks next to the fully shared and the
independent networks of the same components (`AllocationBuilder.build` of
`shared_allocation()` and `independent_allocation()`), on the same splits.
Paper: 93.52% mean test accuracy for the learned allocation.

Default settings: the paper's (105x105 images, 48 filters, 8 routed layers
of 7 components, batch 16 per task, 8,000 steps, Adam 1e-4 / 2e-3, weight
decay 3e-4, p0 = 0.97, temperature max(0.5, 50 / sqrt(step + 1)), model
chosen by mean validation accuracy). They need a GPU, and by a FLOP count
(about 8 TFLOP per step at 105x105) more than one 10-minute command per
network: run one network per call, with a checkpoint directory and a time
limit, and repeat the same command until it prints the results (Keras's
`BackupAndRestore` resumes the run, `ModelCheckpoint` keeps the best
validation weights):

    python benchmarks/omniglot_allocation.py --networks allocation --mixed-precision \
        --checkpoint-dir ckpt --time-limit 8

`--reduced`: a setting meant to finish in under an hour on 2 free CPU
cores: 28x28 images, 16 filters, 1,000 steps, validation every 250 steps,
learning rates 1e-3 / 2e-2 (ten times the paper's, same ratio, since 1,000
steps at 1e-4 barely move the weights); the same network shape and
protocol otherwise. Its figures are far from the
paper's and say only how the three networks compare at that budget.

One deliberate difference from the official code: a training step here
carries one batch of every task and makes one update of the summed loss
(as methods.md says); the official TF1 code made one Adam update per task,
in a random task order, so its 8,000 steps were 160,000 updates.
"""

import argparse
import json
import os
import sys
import time

import keras_branching  # noqa: F401  (first: it imports TensorFlow without start-up noise)

# isort: split

import tempfile

import keras
import numpy as np

from keras_branching.allocation import (
    AllocationBuilder,
    LearnedAllocation,
    export_allocation_network,
    read_allocation,
    task_model,
)
from keras_branching.datasets.batches import task_batches
from keras_branching.datasets.omniglot import omniglot
from keras_branching.task import Task

PAPER_ACCURACY = 93.52
NETWORKS = ("allocation", "shared", "independent")
REDUCED = {
    "image_size": 28,
    "filters": 16,
    "steps": 1000,
    "eval_every": 250,
    "learning_rate": 1e-3,
    "allocation_learning_rate": 2e-2,
}


def group_norm(groups):
    return lambda: keras.layers.GroupNormalization(groups)


def conv_pair(kernels, filters, groups, strides):
    """Two convolutions (the second one strided), each followed by GroupNorm and ReLU."""

    def make():
        layers = []
        for i, kernel in enumerate(kernels):
            layers += [
                keras.layers.Conv2D(
                    filters, kernel, strides=strides if i == 1 else 1, padding="same"
                ),
                keras.layers.GroupNormalization(groups),
                keras.layers.ReLU(),
            ]
        return keras.Sequential(layers)

    return make


def pool(kind, strides):
    layer = keras.layers.MaxPooling2D if kind == "max" else keras.layers.AveragePooling2D
    return lambda: layer(3, strides=strides, padding="same")


def identity(filters, strides):
    if strides == 1:
        return keras.layers.Identity
    # As in the official code: a strided identity is a strided 1x1 convolution.
    return lambda: keras.layers.Conv2D(filters, 1, strides=strides, padding="same")


def omniglot_layers(filters=48, num_layers=8, num_downsamples=5, groups=4):
    """The network of the paper (from the official code's Omniglot model)."""
    layers = [
        lambda: keras.layers.Conv2D(filters, 1, padding="same"),
        group_norm(groups),
        keras.layers.ReLU,
    ]
    interval = num_layers / num_downsamples
    downsampling = {int(interval * i) for i in range(num_downsamples)}
    for index in range(num_layers):
        strides = 2 if index in downsampling else 1
        layers.append(
            [
                conv_pair((3, 3), filters, groups, strides),
                conv_pair((5, 5), filters, groups, strides),
                conv_pair((7, 7), filters, groups, strides),
                conv_pair(((1, 7), (7, 1)), filters, groups, strides),
                pool("max", strides),
                pool("avg", strides),
                identity(filters, strides),
            ]
        )
        layers += [group_norm(groups), keras.layers.ReLU]
    layers += [keras.layers.Flatten, lambda: keras.layers.Dropout(0.5)]
    return layers


def accuracies(model, data, split, batch_size=64, joint=False):
    """Per-task accuracy on `split`.

    `joint`: the model runs every task at once (allocation and shared
    networks): feed chunks of every task's data together, so the graph is
    traced once. Otherwise (static networks) evaluate each task alone.
    """
    if joint:
        names = data.keras_names
        arrays = {task: data.arrays[split][task] for task in data.tasks}
        longest = max(len(y) for _, y in arrays.values())
        predictions = {task: [] for task in data.tasks}
        for start in range(0, longest, batch_size):
            chunk = {names[t]: x[start : start + batch_size] for t, (x, _) in arrays.items()}
            out = model.predict_on_batch(chunk)
            for task in data.tasks:
                predictions[task].append(np.asarray(out[names[task]]))
        return {
            task: float(np.mean(np.argmax(np.concatenate(predictions[task]), -1) == y))
            for task, (_, y) in arrays.items()
        }
    result = {}
    for task in data.tasks:
        x, y = data.arrays[split][task]
        logits = task_model(model, data.keras_names[task]).predict(
            x, batch_size=batch_size, verbose=0
        )
        result[task] = float(np.mean(np.argmax(logits, axis=-1) == y))
    return result


class Validation(keras.callbacks.Callback):
    """Mean validation accuracy after each epoch, as `val_mean_accuracy` in the logs.

    Listed before `ModelCheckpoint`, which keeps the best weights by it.
    Every value is also written to `path` (JSON), so that a resumed run
    knows the best value of the earlier calls. Stops training at the first
    epoch past `deadline` (a time).
    """

    def __init__(self, data, network, path, deadline=None):
        super().__init__()
        self.data, self.network, self.path, self.deadline = data, network, path, deadline
        self.values = {}
        if os.path.exists(path):
            with open(path) as f:
                self.values = json.load(f)

    def best_so_far(self):
        return max(self.values.values()) if self.values else None

    def on_epoch_end(self, epoch, logs=None):
        joint = self.network == "allocation"  # the routed network runs every task at once
        validation = float(
            np.mean(list(accuracies(self.model, self.data, "validation", joint=joint).values()))
        )
        logs["val_mean_accuracy"] = validation
        self.values[str(epoch)] = validation
        with open(self.path, "w") as f:
            json.dump(self.values, f)
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        print(
            f"  {self.network} step {step}: loss {logs.get('loss'):.3f}, "
            f"mean validation accuracy {100 * validation:.2f}%",
            flush=True,
        )
        if self.deadline and time.time() > self.deadline:
            self.model.stop_training = True


def run(network, builder, data, args):
    """Trains one network; returns its results, or None if stopped at the time limit."""
    keras.utils.set_random_seed(args.seed)
    epochs = args.steps // args.eval_every
    directory = args.checkpoint_dir or tempfile.mkdtemp(prefix="omniglot_allocation_")
    os.makedirs(directory, exist_ok=True)
    backup_dir = os.path.join(directory, f"{network}_backup")
    best_path = os.path.join(directory, f"{network}_best.weights.h5")
    start = time.time()
    deadline = start + 60 * args.time_limit if args.time_limit else None
    validation = Validation(data, network, os.path.join(directory, f"{network}_val.json"), deadline)
    callbacks = [
        validation,
        keras.callbacks.ModelCheckpoint(
            best_path,
            monitor="val_mean_accuracy",
            mode="max",
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=validation.best_so_far(),
        ),
        # Kept after the last epoch, so a finished run is not redone.
        keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False),
    ]
    train = task_batches(data.datasets("train", keras_names=True), args.batch_size, seed=args.seed)
    fit_kwargs = dict(
        epochs=epochs, steps_per_epoch=args.eval_every, callbacks=callbacks, verbose=0
    )
    if network == "allocation":
        search = LearnedAllocation(
            builder,
            initial_probability=0.97,
            initial_temperature=50.0,
            min_temperature=0.5,
            allocation_learning_rate=args.allocation_learning_rate,
            weight_decay=3e-4,
            seed=args.seed,
        )
        history = search.search(train, shuffle=False, **fit_kwargs).history
        model = search.model
    else:
        plan = (
            builder.shared_allocation() if network == "shared" else builder.independent_allocation()
        )
        model = builder.build(plan, jit_compile=args.jit)
        # (this call's epochs only, after a resume; the search keeps them all)
        history = model.fit(train, shuffle=False, **fit_kwargs).history
    seconds = time.time() - start
    done = int(keras.ops.convert_to_numpy(model.optimizer.iterations)) // args.eval_every
    if done < epochs:
        print(
            f"  {network}: stopped at the time limit after epoch {done} of {epochs}; "
            f"run the same command again to resume from {backup_dir}",
            flush=True,
        )
        return None
    model.load_weights(best_path)
    best = callbacks[1].best  # ModelCheckpoint's, over every call
    if network == "allocation":
        static = export_allocation_network(builder, model)
        allocation = read_allocation(model, builder.task_names)
    else:
        static = model
    test = accuracies(static, data, "test")
    if network == "allocation":
        joint = accuracies(model, data, "test", joint=True)
        assert np.allclose(list(joint.values()), list(test.values()), atol=2e-3), (joint, test)
    result = {
        "network": network,
        "mean_test_accuracy": 100 * float(np.mean(list(test.values()))),
        "best_validation_accuracy": 100 * best,
        "params": int(static.count_params()),
        "train_seconds": round(seconds, 1),
        "per_task_test_accuracy": test,
        "validation_history": history.get("val_mean_accuracy"),
    }
    if network == "allocation":
        result["components_used_per_task"] = [
            int(n) for n in np.sum([m.sum(axis=1) for m in allocation.layers], axis=0)
        ]
        result["allocation"] = allocation.to_config()
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    default_data = os.path.join(os.environ.get("KERAS_BRANCHING_DATA", ""), "omniglot")
    if not os.environ.get("KERAS_BRANCHING_DATA"):
        default_data = os.path.join(here, "..", "..", "shared", "data", "omniglot")
    parser.add_argument("--data-dir", default=default_data)
    parser.add_argument(
        "--reduced",
        action="store_true",
        help=f"the CPU setting: {REDUCED} (explicit flags still win)",
    )
    parser.add_argument("--networks", default=",".join(NETWORKS))
    parser.add_argument("--steps", type=int, default=None, help="training steps (paper: 8000)")
    parser.add_argument(
        "--eval-every", type=int, default=None, help="steps between validations (default 500)"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=None, help="paper: 1e-4")
    parser.add_argument("--allocation-learning-rate", type=float, default=None, help="paper: 2e-3")
    parser.add_argument("--image-size", type=int, default=None, help="paper: 105")
    parser.add_argument("--filters", type=int, default=None, help="paper: 48")
    parser.add_argument("--num-alphabets", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mixed-precision", action="store_true", help="mixed_bfloat16 (for GPUs)")
    parser.add_argument(
        "--jit", dest="jit", action="store_true", default=None, help="XLA (default: on GPU)"
    )
    parser.add_argument("--no-jit", dest="jit", action="store_false")
    parser.add_argument("--json", default=None, help="write the results to this file")
    parser.add_argument(
        "--checkpoint-dir",
        default=None,
        help="back up after every validation (BackupAndRestore) and resume from there "
        "(to split a run over calls); the best weights are kept there too",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="minutes; stop at the first validation past it (use with --checkpoint-dir)",
    )
    args = parser.parse_args(argv)
    settings = {
        "image_size": 105,
        "filters": 48,
        "steps": 8000,
        "eval_every": 500,
        "learning_rate": 1e-4,
        "allocation_learning_rate": 2e-3,
    }
    if args.reduced:
        settings.update(REDUCED)
    for key, value in settings.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.eval_every > args.steps or args.steps % args.eval_every:
        parser.error("--steps must be a multiple of --eval-every")
    if args.jit is None:
        import tensorflow as tf

        args.jit = bool(tf.config.list_physical_devices("GPU"))
    networks = args.networks.split(",")
    if not set(networks) <= set(NETWORKS):
        parser.error(f"--networks must be a comma-separated subset of {NETWORKS}")
    if args.mixed_precision:
        keras.config.set_dtype_policy("mixed_bfloat16")

    start = time.time()
    data = omniglot(
        args.data_dir, num_alphabets=args.num_alphabets, image_size=args.image_size, seed=args.seed
    )
    print(f"{data} loaded in {time.time() - start:.1f}s", flush=True)
    tasks = [
        Task(
            data.keras_names[name],
            head=(lambda n=n: keras.layers.Dense(n)),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        for name, n in data.num_classes.items()
    ]
    builder = AllocationBuilder(
        # One input per task: each alphabet has its own images.
        inputs=dict.fromkeys([t.name for t in tasks], (args.image_size, args.image_size, 1)),
        layers=omniglot_layers(args.filters),
        tasks=tasks,
        optimizer=keras.optimizers.Adam(args.learning_rate),
    )
    settings = {
        k: getattr(args, k)
        for k in (
            "image_size",
            "filters",
            "steps",
            "eval_every",
            "batch_size",
            "learning_rate",
            "allocation_learning_rate",
            "seed",
            "mixed_precision",
            "jit",
        )
    }
    print(f"settings: {settings}", flush=True)
    results = [run(network, builder, data, args) for network in networks]
    if any(r is None for r in results):
        return results

    print(
        f"\nMean test accuracy over {len(data.tasks)} Omniglot tasks "
        f"(paper, learned allocation: {PAPER_ACCURACY:.2f}%)"
    )
    print(f"{'network':<12} {'test acc.':>9} {'best val.':>9} {'params':>10} {'train s':>8}")
    for r in results:
        print(
            f"{r['network']:<12} {r['mean_test_accuracy']:>8.2f}% "
            f"{r['best_validation_accuracy']:>8.2f}% {r['params']:>10,} {r['train_seconds']:>8.0f}"
        )
    for r in results:
        if r["network"] == "allocation":
            gap = PAPER_ACCURACY - r["mean_test_accuracy"]
            print(
                f"gap to the paper: {gap:.2f} points; components used per task over the "
                f"routed layers: {r['components_used_per_task']}"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": settings, "results": results}, f, indent=1)
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
