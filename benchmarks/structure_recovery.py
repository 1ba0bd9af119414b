"""Do the tree searches recover known groups? (issue 13, section 4, "Known structure").

For each seed: run `AffinityBranching` or `LearnToBranch` on a problem whose
true grouping is known, print the grouping the search found at the last
block before the task heads and whether it equals the true groups, then
"recovered in k of n seeds" and the search times.

Problems:
- `synthetic`: `synthetic_tasks(num_groups=3, tasks_per_group=2,
  num_examples=2000, seed=s)` (relatedness 0.9, input size 100) plus 500
  validation examples of the same tasks; three Dense(64, relu) blocks,
  Dense(1) heads, mse, Adam 1e-3.
- `multi_mnist`: `datasets.multi_mnist(num_examples=2000, seed=s,
  num_validation=1000)`, images from `$MULTI_MNIST_DIR` (e.g.
  `MULTI_MNIST_DIR=../shared/data/mnist`), else
  `$KERAS_BRANCHING_DATA/mnist`; blocks Conv(8)+pool, Conv(16)+pool,
  Flatten+Dense(64); softmax or sigmoid heads.

The budget of a search that takes one (affinity) is the parameter count of
the true tree: by default the first block shared and the true groups at
every later block (`--budget-tree grouped`: the true groups at every
block). Variants (`--variant`):
affinity `balanced` (default cost) or `paper` (the paper's cost);
learning to branch `default` (the search's defaults, heads routed, widths
[1, groups, groups]: at most the true tree's size, groups read at the last
block) or `paper` (`route_heads=False`, widths [1, groups, tasks]: one node
per task in the last block, groups read at the block before it); 30 epochs.

`--ltb KEY=VALUE` (repeatable; VALUE a Python literal) passes an extra
argument to `LearnToBranch`, e.g. `--ltb usage_penalty=1.0 --ltb
warmup_epochs=5` (see docs/methods/learning_to_branch.md, "Options beyond
the paper").

Run: `python benchmarks/structure_recovery.py synthetic --method affinity
--seeds 5 [--variant paper]`. Keep to a few seeds at a time on a shared
machine; `--first-seed` starts elsewhere.
"""

import argparse
import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "2")

import time  # noqa: E402

import keras  # noqa: E402

from keras_branching.builder import BranchedModelBuilder  # noqa: E402
from keras_branching.task import Task  # noqa: E402
from keras_branching.tree import BranchingTree  # noqa: E402

VARIANTS = {"affinity": ("balanced", "paper"), "learn_to_branch": ("default", "paper")}


# Problems.


def synthetic_problem(seed, num_examples):
    from keras_branching.datasets import synthetic_tasks

    x, y, groups = synthetic_tasks(3, 2, num_examples=num_examples + 500, seed=seed)
    split = num_examples
    train = (x[:split], {t: v[:split] for t, v in y.items()})
    validation = (x[split:], {t: v[split:] for t, v in y.items()})
    tasks = [Task(t, lambda: keras.layers.Dense(1), "mse") for t in y]
    blocks = [lambda: keras.layers.Dense(64, activation="relu")] * 3
    builder = BranchedModelBuilder((x.shape[1],), blocks, tasks, optimizer="adam")
    return builder, train, validation, groups


def _softmax_head():
    return keras.layers.Dense(10, activation="softmax")


def _sigmoid_head():
    return keras.layers.Dense(1, activation="sigmoid")


def multi_mnist_problem(seed, num_examples):
    from keras_branching.datasets import mnist

    data_dir = os.environ.get("MULTI_MNIST_DIR")  # else $KERAS_BRANCHING_DATA/mnist
    data = mnist.multi_mnist(data_dir, num_examples=num_examples, seed=seed, num_validation=1000)
    x, _ = data["train"]
    tasks = []
    for name in data["tasks"]:
        if data["num_classes"][name] > 2:
            tasks.append(Task(name, _softmax_head, "sparse_categorical_crossentropy"))
        else:
            tasks.append(Task(name, _sigmoid_head, "binary_crossentropy"))

    def conv(filters):
        return lambda: keras.Sequential(
            [
                keras.layers.Conv2D(filters, 3, activation="relu", padding="same"),
                keras.layers.MaxPooling2D(2),
            ]
        )

    def dense():
        return keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(64, activation="relu")])

    builder = BranchedModelBuilder(x.shape[1:], [conv(8), conv(16), dense], tasks)
    return builder, data["train"], data["validation"], data["groups"]


PROBLEMS = {"synthetic": synthetic_problem, "multi_mnist": multi_mnist_problem}


# Searches.


def true_tree(builder, groups, budget_tree="stem"):
    """The true grouping as a tree: a shared first block ("stem"), or grouped at every block."""
    tasks = list(builder.task_names)
    first = [tasks] if budget_tree == "stem" else groups
    return BranchingTree(tasks, [first] + [groups] * (builder.num_blocks - 1))


def run_affinity(builder, train, validation, groups, seed, variant, epochs, budget_tree):
    from keras_branching.affinity import AffinityBranching

    budget = builder.count_params(true_tree(builder, groups, budget_tree))
    kwargs = {} if variant == "balanced" else {"cost": "paper"}
    search = AffinityBranching(builder, budget=budget, num_samples=400, seed=seed, **kwargs)
    result = search.search(
        *train, validation_data=validation, epochs=epochs, batch_size=64, verbose=0
    )
    last = search.affinity.values[-1]
    return result.plan, builder.num_blocks - 1, last


LTB_OPTIONS = {}  # extra `LearnToBranch` arguments (`--ltb key=value`)


def run_learn_to_branch(builder, train, validation, groups, seed, variant, epochs, budget_tree):
    from keras_branching.learn_to_branch import LearnToBranch

    num_tasks, num_groups = len(builder.tasks), len(groups)
    widths = [1] + [num_groups] * (builder.num_blocks - 1)
    if variant == "paper":  # one node per task in the last block
        widths = [1] * (builder.num_blocks - 2) + [num_groups, num_tasks]
        search = LearnToBranch(builder, widths=widths, route_heads=False, seed=seed, **LTB_OPTIONS)
        block = builder.num_blocks - 2
    else:
        search = LearnToBranch(builder, widths=widths, seed=seed, **LTB_OPTIONS)
        block = builder.num_blocks - 1
    result = search.search(
        *train, validation_data=validation, epochs=epochs, batch_size=64, verbose=0
    )
    return result.plan, block, None


def _grouping(groups):
    return sorted(sorted(g) for g in groups)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problem", choices=sorted(PROBLEMS))
    parser.add_argument("--method", choices=sorted(VARIANTS), required=True)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument(
        "--variant",
        default=None,
        help="affinity: balanced | paper; learn_to_branch: default | paper",
    )
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--num-examples", type=int, default=2000)
    parser.add_argument(
        "--budget-tree",
        choices=("stem", "grouped"),
        default="stem",
        help="the true tree whose size is the budget: first block shared (default), or "
        "the true groups at every block",
    )
    parser.add_argument(
        "--ltb",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra `LearnToBranch` argument (a Python literal), e.g. --ltb usage_penalty=0.1",
    )
    args = parser.parse_args()
    import ast

    for option in args.ltb:
        key, _, value = option.partition("=")
        LTB_OPTIONS[key] = ast.literal_eval(value)
    variant = args.variant or VARIANTS[args.method][0]
    if variant not in VARIANTS[args.method]:
        parser.error(
            f"--variant for {args.method} must be one of {VARIANTS[args.method]}; got {variant!r}"
        )
    epochs = args.epochs or (20 if args.method == "affinity" else 30)
    run = run_affinity if args.method == "affinity" else run_learn_to_branch
    print(
        f"{args.problem}, {args.method} ({variant}{', ' if LTB_OPTIONS else ''}"
        f"{', '.join(f'{k}={v!r}' for k, v in LTB_OPTIONS.items())}), {epochs} epochs, "
        f"{args.num_examples} training examples, seeds {args.first_seed}.."
        f"{args.first_seed + args.seeds - 1}"
    )
    recovered, times = 0, []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        keras.utils.set_random_seed(seed)
        builder, train, validation, groups = PROBLEMS[args.problem](seed, args.num_examples)
        start = time.perf_counter()
        plan, block, affinity = run(
            builder, train, validation, groups, seed, variant, epochs, args.budget_tree
        )
        times.append(time.perf_counter() - start)
        found = _grouping(plan.groups(block))
        ok = found == _grouping(groups)
        recovered += ok
        print(
            f"seed {seed}: copies {plan.num_copies()}, block {block + 1} groups {found} "
            f"{'== true groups' if ok else '!= true groups'} ({times[-1]:.1f} s)"
        )
        if affinity is not None:
            names = builder.task_names
            position = {t: i for i, t in enumerate(names)}
            within = [
                affinity[position[a], position[b]] for g in groups for a in g for b in g if a < b
            ]
            across = [
                affinity[i, j]
                for i in range(len(names))
                for j in range(i + 1, len(names))
                if not any(names[i] in g and names[j] in g for g in groups)
            ]
            print(
                f"  affinity at the last block: within groups {min(within):.2f}-{max(within):.2f}, "
                f"across {min(across):.2f}-{max(across):.2f}"
            )
    print(f"recovered in {recovered} of {args.seeds} seeds")
    print(f"search time: mean {sum(times) / len(times):.1f} s, max {max(times):.1f} s")


if __name__ == "__main__":
    main()
