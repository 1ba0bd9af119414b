"""The `keras-branching` console command (also `python -m keras_branching`).

`keras-branching demo` shows the library end to end on synthetic tasks whose
true grouping is known: it trains the fully shared, the fully independent
and the true-grouping trees; lets two search methods (affinity-guided
branching and learning to branch) choose trees and retrains them; trains
random trees of the searched tree's size; compares everything, says whether
each search found the true groups, exports the best tree of at most the
searched tree's size as a SavedModel and checks that the served model
answers like `predict`.
"""

import argparse
import os
import sys
import time


def _import_keras():
    import keras
    import tensorflow as tf

    return keras, tf


class _Progress:
    """A one-line progress display for `fit`, redrawn in place on a terminal."""

    def __init__(self, keras, label, epochs):
        parent = self

        class Callback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                parent.update(epoch + 1, logs or {})

        self.callback = Callback()
        self.label, self.epochs = label, epochs
        self.tty = sys.stdout.isatty()
        self.start = time.time()

    def update(self, epoch, logs):
        width = 20
        done = int(width * epoch / self.epochs)
        line = (
            f"  {self.label:<22} [{'#' * done}{'.' * (width - done)}] "
            f"epoch {epoch:>3}/{self.epochs}  loss {logs.get('loss', float('nan')):8.4f}  "
            f"val_loss {logs.get('val_loss', float('nan')):8.4f}  "
            f"{time.time() - self.start:5.1f}s"
        )
        if self.tty:
            end = "\n" if epoch == self.epochs else ""
            print("\r" + line, end=end, flush=True)
        elif epoch == self.epochs or epoch % max(1, self.epochs // 4) == 0:
            print(line, flush=True)


def _demo_problem(args):
    """The demo's data, builder and true tree."""
    import keras

    from keras_branching import BranchedModelBuilder, BranchingTree, Task
    from keras_branching.datasets import synthetic_tasks

    x, y, groups = synthetic_tasks(
        args.groups,
        args.tasks_per_group,
        args.examples,
        input_dim=args.input_dim,
        relatedness=args.relatedness,
        num_sines=args.sines,
        seed=args.seed,
    )
    split = int(0.8 * len(x))
    train = (x[:split], {t: v[:split] for t, v in y.items()})
    val = (x[split:], {t: v[split:] for t, v in y.items()})
    tasks = [Task(name, head=lambda: keras.layers.Dense(1), loss="mse") for name in y]
    builder = BranchedModelBuilder(
        inputs=(args.input_dim,),
        blocks=[lambda: keras.layers.Dense(args.width, activation="relu")] * args.blocks,
        tasks=tasks,
        optimizer=keras.optimizers.Adam(args.learning_rate),
        seed=args.seed,
    )
    names = list(y)
    # True grouping: the first block shared, the groups apart after it.
    true_tree = BranchingTree(names, [[names]] + [groups] * (args.blocks - 1))
    return builder, train, val, groups, true_tree


def _train(keras, builder, tree, label, train, val, args):
    keras.utils.set_random_seed(args.seed)
    model = builder.build(tree)
    progress = _Progress(keras, label, args.epochs)
    model.fit(
        *train,
        validation_data=val,
        epochs=args.epochs,
        batch_size=args.batch_size,
        verbose=0,
        callbacks=[progress.callback],
    )
    scores = model.evaluate(*val, verbose=0, return_dict=True, batch_size=512)
    return model, {t: scores[f"{t}_loss"] for t in builder.task_names}


def _same_groups(found, true):
    return {frozenset(g) for g in found} == {frozenset(g) for g in true}


def _affinity_section(keras, builder, train, val, groups, true_tree, args):
    from keras_branching.affinity import AffinityBranching

    budget = builder.count_params(true_tree)
    print(
        "\nAffinity-guided branching: train single-task networks, measure how alike "
        f"their representations are, pick the cheapest tree within {budget:,} "
        "parameters (the true grouping's size)."
    )
    progress = _Progress(keras, "single-task networks", args.epochs)
    search = AffinityBranching(
        builder, budget=budget, num_samples=min(500, len(val[0])), seed=args.seed
    )
    result = search.search(
        *train,
        validation_data=val,
        epochs=args.epochs,
        batch_size=args.batch_size,
        verbose=0,
        callbacks=[progress.callback],
    )
    print(
        "Task affinity (Spearman correlation of RDMs), " + search.affinity.format(branch_point=-1)
    )
    print("Chosen tree:")
    print(result.summary())
    last = result.plan.groups(-1)
    verdict = "matches" if _same_groups(last, groups) else "differs from"
    print(f"  Groups at the last block: {[list(g) for g in last]}: {verdict} the true grouping.")
    return result.plan


def _learn_to_branch_section(keras, builder, train, val, groups, args):
    from keras_branching.evaluation import grouping_block
    from keras_branching.learn_to_branch import LearnToBranch

    # The heads are routed too, so the widths bound the tree: at most the
    # true grouping's copies per block.
    widths = [1] + [args.groups] * (args.blocks - 1)
    print(
        f"\nLearning to branch: a supernet of widths {widths} whose Gumbel-softmax "
        "routers learn each node's parent (and each head's node); the tree is read "
        "from the routers."
    )
    progress = _Progress(keras, "supernet", args.epochs)
    result = LearnToBranch(builder, widths=widths, seed=args.seed).search(
        *train,
        validation_data=val,
        epochs=args.epochs,
        batch_size=args.batch_size,
        verbose=0,
        callbacks=[progress.callback],
    )
    tree = result.plan
    print(tree)
    block = grouping_block(tree)
    learned = tree.groups(block)
    verdict = "matches" if _same_groups(learned, groups) else "differs from"
    print(
        f"  Groups at block {block + 1}: {[list(g) for g in learned]}: {verdict} "
        f"the true grouping {groups}."
    )
    return tree


def _print_table(builder, results, groups):
    from keras_branching.evaluation import tree_recovers_groups

    names = list(results)
    width = max(16, max(len(n) for n in names) + 2)
    header = f"  {'task':<14}" + "".join(f"{n:>{width}}" for n in names)
    print(header)
    print("  " + "-" * (len(header) - 2))
    for task in builder.task_names:
        print(f"  {task:<14}" + "".join(f"{results[n]['losses'][task]:>{width}.4f}" for n in names))
    print(f"  {'mean':<14}" + "".join(f"{results[n]['mean']:>{width}.4f}" for n in names))
    print(f"  {'parameters':<14}" + "".join(f"{results[n]['params']:>{width},}" for n in names))
    found = {n: tree_recovers_groups(results[n]["tree"], groups) for n in names}
    print(
        f"  {'true groups':<14}"
        + "".join(f"{('yes' if found[n] else 'no'):>{width}}" for n in names)
    )


def demo(args):
    keras, tf = _import_keras()
    import numpy as np

    from keras_branching.evaluation import random_tree

    started = time.time()
    builder, train, val, groups, true_tree = _demo_problem(args)
    print(
        f"keras_branching demo: {len(builder.tasks)} synthetic regression tasks in "
        f"{args.groups} groups of {args.tasks_per_group} (true groups: {groups}; "
        f"relatedness {args.relatedness}, {args.sines} sine term(s)), {args.blocks} "
        f"Dense({args.width}) blocks, {len(train[0])} training and {len(val[0])} "
        "validation examples.\n"
    )
    trees = {
        "shared": builder.shared_tree(),
        "independent": builder.independent_tree(),
        "true grouping": true_tree,
    }
    searched = []
    if not args.skip_search:
        trees["affinity"] = _affinity_section(keras, builder, train, val, groups, true_tree, args)
        trees["learn to branch"] = _learn_to_branch_section(
            keras, builder, train, val, groups, args
        )
        searched = ["affinity", "learn to branch"]
    # Random trees of the size a search was allowed (the true grouping's).
    size = builder.count_params(true_tree)
    for i in range(args.random_trees):
        trees[f"random {i + 1}"] = random_tree(builder, size, seed=args.seed + i)
    print(
        f"\nTraining each tree from scratch, {args.epochs} epochs (validation loss is MSE; "
        f"the random trees have {size:,} parameters, the true grouping's size):"
    )
    results = {}
    for label, tree in trees.items():
        model, losses = _train(keras, builder, tree, label, train, val, args)
        results[label] = {
            "model": model,
            "tree": tree,
            "losses": losses,
            "mean": float(np.mean(list(losses.values()))),
            "params": builder.count_params(tree),
        }
    print("\nPer-task validation loss (lower is better); 'true groups': the tree's")
    print("grouping before the task heads equals the true grouping:")
    _print_table(builder, results, groups)

    randoms = [results[n]["mean"] for n in results if n.startswith("random")]
    print()
    for label in searched + ["true grouping"]:
        r = results[label]
        parts = [
            f"{r['mean'] / results['shared']['mean']:.2f}x the shared tree's loss",
            f"{r['mean'] / results['independent']['mean']:.2f}x the independent tree's "
            f"with {r['params'] / results['independent']['params']:.0%} of its parameters",
        ]
        if randoms:
            beaten = sum(r["mean"] < m for m in randoms)
            parts.append(f"better than {beaten} of {len(randoms)} random trees of its size")
        print(f"  {label}: " + "; ".join(parts) + ".")
    # Export the best tree no larger than the true grouping's: what a user
    # would deploy when the independent tree is too big.
    # The true grouping is left out: a user does not know it.
    small = {n: r for n, r in results.items() if r["params"] <= size and n != "true grouping"}
    best = min(small, key=lambda n: small[n]["mean"])
    print(f"\nBest tree of at most {size:,} parameters: the {best} tree.\n{results[best]['tree']}")
    from keras_branching import distributed

    if not distributed.is_chief():
        # Under several processes (`keras.distribution`), process 0 exports.
        print(f"\nDone in {time.time() - started:.0f}s (process 0 exports).")
        return 0
    export_dir = os.path.abspath(args.output_dir)
    os.makedirs(export_dir, exist_ok=True)
    saved_model_dir = os.path.join(export_dir, "saved_model")
    model = results[best]["model"]
    model.export(saved_model_dir, format="tf_saved_model", verbose=False)
    with open(os.path.join(export_dir, "tree.json"), "w") as f:
        f.write(results[best]["tree"].to_json())
    reloaded = tf.saved_model.load(saved_model_dir)  # keep a reference while serving
    served = reloaded.serve(val[0][:8])
    expected = model.predict(val[0][:8], verbose=0)
    gap = max(float(np.max(np.abs(served[t].numpy() - expected[t]))) for t in expected)
    print(
        f"\nExported the {best} model as a SavedModel to {saved_model_dir}\n"
        f"(its tree is in {os.path.join(export_dir, 'tree.json')}). Serving it with "
        f"tf.saved_model.load(path).serve(x) returns {sorted(served)}; largest "
        f"difference from predict: {gap:.2e}."
    )
    print(f"\nDone in {time.time() - started:.0f}s.")
    return 0


_MIN_EXAMPLES = 20


def _int_at_least(low):
    """An argparse `type=` function: an integer >= `low`, else a one-line error."""

    def parse(text):
        try:
            value = int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {low}. Received: {text!r}"
            ) from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}. Received: {text!r}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def _fraction(text):
    """An argparse `type=` function: a number in [0, 1], else a one-line error."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"expected a number in [0, 1]. Received: {text!r}"
        ) from None
    if not 0.0 <= value <= 1.0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1]. Received: {text!r}")
    return value


def _positive_number(text):
    """An argparse `type=` function: a finite number > 0, else a one-line error."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number > 0. Received: {text!r}") from None
    if not 0.0 < value < float("inf"):  # also rejects nan
        raise argparse.ArgumentTypeError(f"expected a number > 0. Received: {text!r}")
    return value


def _parser():
    parser = argparse.ArgumentParser(
        prog="keras-branching",
        description="Decide which layers which tasks share, as plain Keras models.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "demo",
        help="train and compare branching trees on synthetic tasks, export the best",
        description=__doc__.split("\n\n")[1],
    )
    run.add_argument(
        "--output-dir",
        default="keras_branching_demo",
        help="folder for the exported SavedModel and tree (default: %(default)s)",
    )
    positive = _int_at_least(1)
    run.add_argument("--epochs", type=positive, default=30, help="epochs per tree (%(default)s)")
    run.add_argument(
        "--examples",
        type=_int_at_least(_MIN_EXAMPLES),
        default=3000,
        help=f"examples, >= {_MIN_EXAMPLES} (%(default)s)",
    )
    run.add_argument("--groups", type=positive, default=3, help="task groups (%(default)s)")
    run.add_argument(
        "--tasks-per-group", type=positive, default=2, help="tasks per group (%(default)s)"
    )
    run.add_argument(
        "--input-dim",
        type=_int_at_least(2),
        default=16,
        help="input size, >= 2 x groups (%(default)s)",
    )
    run.add_argument(
        "--blocks", type=_int_at_least(2), default=3, help="Dense blocks, >= 2 (%(default)s)"
    )
    run.add_argument("--width", type=positive, default=8, help="units per block (%(default)s)")
    run.add_argument(
        "--relatedness",
        type=_fraction,
        default=1.0,
        help="similarity of the tasks in a group, in [0, 1] (%(default)s)",
    )
    run.add_argument(
        "--sines",
        type=_int_at_least(0),
        default=1,
        help="sine terms per target; the reference generator has 10 (%(default)s)",
    )
    run.add_argument(
        "--random-trees",
        type=_int_at_least(0),
        default=3,
        help="random trees of the true grouping's size to compare with (%(default)s)",
    )
    run.add_argument("--batch-size", type=positive, default=128, help="batch size (%(default)s)")
    run.add_argument(
        "--learning-rate",
        type=_positive_number,
        default=3e-3,
        help="Adam's learning rate, > 0 (%(default)s)",
    )
    run.add_argument(
        "--seed", type=_int_at_least(0), default=0, help="random seed, >= 0 (%(default)s)"
    )
    run.add_argument(
        "--skip-search",
        action="store_true",
        help="only compare the fixed trees; skip the two search methods",
    )
    run.set_defaults(handler=demo, error=run.error)
    return parser


def main(argv=None):
    """Entry point of the `keras-branching` command.

    Every numeric option is checked while parsing: a bad value exits with
    status 2 and a one-line error naming the option and the value.

    Args:
        argv: the arguments (default: `sys.argv[1:]`).

    Returns:
        The exit status of the command (0 on success).
    """
    args = _parser().parse_args(argv)
    if args.input_dim < 2 * args.groups:
        args.error(
            f"argument --input-dim: expected >= 2 x --groups = {2 * args.groups}, so that "
            f"every group gets its own directions. Received: {args.input_dim}"
        )
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
