"""Learned parameter allocation on 20 Omniglot alphabets (Maziarz et al. 2019).

Trains the paper's setup (methods.md section 4) with `AllocationBuilder`
and prints the mean test accuracy over the 20 tasks next to the fully
shared and the independent networks of the same components, on the same
splits. Paper: 93.52% mean test accuracy for the learned allocation.

Default settings: the paper's (105x105 images, 48 filters, 8 routed layers
of 7 components, batch 16 per task, 8,000 steps, Adam 1e-4 / 2e-3, weight
decay 3e-4, p0 = 0.97, temperature max(0.5, 50 / sqrt(step + 1)), model
chosen by mean validation accuracy). They need a GPU, and by a FLOP count
(about 8 TFLOP per step at 105x105) more than one 10-minute command per
network: run one network per call, with a checkpoint directory and a time
limit, and repeat the same command until it prints the results:

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

import keras
import numpy as np

from keras_branching.allocation import AllocationBuilder, task_batches, task_model
from keras_branching.callbacks.temperature import TemperatureSchedule
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


class BestOnValidation(keras.callbacks.Callback):
    """Evaluates mean validation accuracy after each epoch; keeps the best weights."""

    def __init__(self, builder, data, network):
        super().__init__()
        self.builder, self.data, self.network = builder, data, network
        self.best, self.best_weights, self.history = -1.0, None, []
        self.epochs_done, self.checkpoint, self.deadline = 0, None, None

    def on_epoch_end(self, epoch, logs=None):
        self.epochs_done = epoch + 1
        joint = self.network != "independent"
        validation = float(
            np.mean(list(accuracies(self.model, self.data, "validation", joint=joint).values()))
        )
        step = int(self.model.optimizer.iterations.numpy())
        self.history.append((step, validation, float(logs.get("loss", np.nan))))
        print(
            f"  {self.network} step {step}: loss {logs.get('loss'):.3f}, "
            f"mean validation accuracy {100 * validation:.2f}%",
            flush=True,
        )
        if validation > self.best:
            self.best, self.best_weights = validation, self.model.get_weights()
        if self.checkpoint:
            save_checkpoint(self.checkpoint, self.model, self)
        if self.deadline and time.time() > self.deadline:
            self.model.stop_training = True


def _optimizers(model):
    return [o for o in (model.optimizer, getattr(model, "allocation_optimizer", None)) if o]


def save_checkpoint(path, model, keeper):
    """Weights, optimizer states, best weights and history, to resume a later call."""
    arrays = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    for j, optimizer in enumerate(_optimizers(model)):
        arrays.update({f"o{j}_{i}": np.asarray(v) for i, v in enumerate(optimizer.variables)})
    arrays.update({f"b{i}": w for i, w in enumerate(keeper.best_weights)})
    meta = {"epochs": keeper.epochs_done, "best": keeper.best, "history": keeper.history}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path + ".tmp.npz", **arrays)
    os.replace(path + ".tmp.npz", path)


def load_checkpoint(path, model, keeper):
    with np.load(path) as stored:
        count = len(model.get_weights())
        model.set_weights([stored[f"w{i}"] for i in range(count)])
        for j, optimizer in enumerate(_optimizers(model)):
            for i, variable in enumerate(optimizer.variables):
                variable.assign(stored[f"o{j}_{i}"])
        keeper.best_weights = [stored[f"b{i}"] for i in range(count)]
        meta = json.loads(stored["meta"].tobytes().decode())
    keeper.best, keeper.history = meta["best"], [tuple(h) for h in meta["history"]]
    keeper.epochs_done = meta["epochs"]
    return meta["epochs"]


def run(network, builder, data, args):
    keras.utils.set_random_seed(args.seed)
    compile_kwargs = {
        "jit_compile": args.jit,
        "learning_rate": args.learning_rate,
        "allocation_learning_rate": args.allocation_learning_rate,
    }
    if network == "allocation":
        model = builder.build(**compile_kwargs)
    elif network == "shared":
        model = builder.build_shared(**compile_kwargs)
    else:
        model = builder.build_independent(**compile_kwargs)
    train = data.datasets("train", keras_names=True)
    dataset = task_batches(train, args.batch_size, seed=args.seed)
    keeper = BestOnValidation(builder, data, network)
    callbacks = [keeper]
    if network == "allocation":
        callbacks.append(
            TemperatureSchedule("inverse_sqrt", initial_temperature=50.0, min_temperature=0.5)
        )
    start = time.time()
    epochs, initial_epoch = args.steps // args.eval_every, 0
    if args.checkpoint_dir:
        os.makedirs(args.checkpoint_dir, exist_ok=True)
        keeper.checkpoint = os.path.join(args.checkpoint_dir, f"{network}.npz")
        if os.path.exists(keeper.checkpoint):
            initial_epoch = load_checkpoint(keeper.checkpoint, model, keeper)
            print(f"  {network}: resumed after epoch {initial_epoch}", flush=True)
    if args.time_limit:
        keeper.deadline = start + 60 * args.time_limit
    if initial_epoch < epochs:
        model.fit(
            dataset,
            steps_per_epoch=args.eval_every,
            epochs=epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            verbose=0,
            shuffle=False,
        )
    seconds = time.time() - start
    if keeper.epochs_done < epochs:
        print(
            f"  {network}: stopped at the time limit after epoch {keeper.epochs_done} of "
            f"{epochs}; run the same command again to resume from {keeper.checkpoint}",
            flush=True,
        )
        return None
    model.set_weights(keeper.best_weights)
    static = builder.export(model) if network == "allocation" else model
    test = accuracies(static, data, "test", joint=network == "shared")
    if network == "allocation":
        joint = accuracies(model, data, "test", joint=True)
        assert np.allclose(list(joint.values()), list(test.values()), atol=2e-3), (joint, test)
    result = {
        "network": network,
        "mean_test_accuracy": 100 * float(np.mean(list(test.values()))),
        "best_validation_accuracy": 100 * keeper.best,
        "params": int(static.count_params()),
        "train_seconds": round(seconds, 1),
        "per_task_test_accuracy": test,
        "validation_history": keeper.history,
    }
    if network == "allocation":
        allocations = builder.allocations(model)
        result["components_used_per_task"] = [int(a.sum()) for a in np.sum(allocations, axis=0)]
        result["allocations"] = [a.astype(int).tolist() for a in allocations]
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
        help="save after every validation and resume from there (to split a run over calls)",
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
        inputs=(args.image_size, args.image_size, 1),
        layers=omniglot_layers(args.filters),
        tasks=tasks,
        initial_probability=0.97,
        temperature=50.0,
        seed=args.seed,
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
