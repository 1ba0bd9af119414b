"""Speed and accuracy of the tree searches of affinity-guided branching.

Prints:
1. exact search vs brute-force enumeration on random instances up to 5
   tasks and 3 blocks (how many agree);
2. exact search time for 10 tasks and 4 blocks (and 12 x 4) at several budgets;
3. beam search time for 40 tasks and 5 blocks (CelebA size);
4. the beam's gap to the optimum on random instances small enough for the
   exact search (median and worst, relative to the optimal cost).

Run on one core: `python benchmarks/tree_search.py` (add `--quick` for a
shorter run). Instances: affinities drawn uniformly in [-0.2, 1]
("uniform", no structure: the hardest case for the bounds) or from hidden
groups plus noise ("grouped", closer to measured affinities); sizes are
affine with random prices per block, as `builder.count_params` is.
"""

import argparse
import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import time  # noqa: E402

import numpy as np  # noqa: E402

from keras_branching.affinity.rsa import TaskAffinity  # noqa: E402
from keras_branching.affinity.tree_search import enumerate_trees, select_tree, tree_cost  # noqa: E402
from keras_branching.tree import BranchingTree  # noqa: E402


def uniform_affinity(num_tasks, num_blocks, rng):
    values = rng.uniform(-0.2, 1.0, size=(num_blocks, num_tasks, num_tasks))
    values = (values + values.transpose(0, 2, 1)) / 2
    for d in range(num_blocks):
        np.fill_diagonal(values[d], 1.0)
    return TaskAffinity([f"t{i}" for i in range(num_tasks)], values)


def grouped_affinity(num_tasks, num_blocks, rng):
    """Hidden groups that split further with depth, plus noise."""
    values = np.empty((num_blocks, num_tasks, num_tasks))
    for d in range(num_blocks):
        labels = rng.integers(0, 1 + d + num_tasks // 4, size=num_tasks)
        same = labels[:, None] == labels[None, :]
        base = np.where(same, 0.9 - 0.1 * d, 0.5 - 0.1 * d)
        noise = rng.normal(0, 0.1, size=base.shape)
        values[d] = np.clip(base + (noise + noise.T) / 2, -1, 1)
        np.fill_diagonal(values[d], 1.0)
    return TaskAffinity([f"t{i}" for i in range(num_tasks)], values)


def affine_size(prices):
    def size(tree):
        return 10 + sum(int(p) * k for p, k in zip(prices, tree.num_copies()))

    return size


def brute_force_check(trials, rng):
    agree = 0
    for _ in range(trials):
        num_tasks, num_blocks = int(rng.integers(2, 6)), int(rng.integers(1, 4))
        affinity = uniform_affinity(num_tasks, num_blocks, rng)
        size = affine_size(rng.integers(1, 6, size=num_blocks))
        trees = list(enumerate_trees(affinity.tasks, num_blocks))
        fraction = float(rng.uniform(0, 1))
        shared = size(BranchingTree.shared(affinity.tasks, num_blocks))
        independent = size(BranchingTree.independent(affinity.tasks, num_blocks))
        budget = shared + fraction * (independent - shared)
        best = min(tree_cost(t, affinity) for t in trees if size(t) <= budget)
        found = tree_cost(select_tree(affinity, fraction, size=size, method="exact"), affinity)
        agree += abs(found - best) < 1e-9
    print(f"exact == brute force on {agree}/{trials} random instances (2-5 tasks, 1-3 blocks)")


def timing(num_tasks, num_blocks, method, fractions, rng, make=uniform_affinity):
    for fraction in fractions:
        affinity = make(num_tasks, num_blocks, rng)
        start = time.perf_counter()
        tree = select_tree(affinity, fraction, method=method)
        elapsed = time.perf_counter() - start
        print(
            f"  {method:5s} {num_tasks} tasks x {num_blocks} blocks, budget {fraction:.2f}: "
            f"{elapsed:6.2f} s, cost {tree_cost(tree, affinity):.4f}, copies {tree.num_copies()}"
        )


def gaps(trials, rng, make, widths):
    instances = []
    for _ in range(trials):
        num_tasks, num_blocks = int(rng.integers(5, 11)), int(rng.integers(2, 5))
        affinity = make(num_tasks, num_blocks, rng)
        size = affine_size(rng.integers(1, 10, size=num_blocks))
        fraction = float(rng.uniform(0.05, 0.95))
        optimum = tree_cost(select_tree(affinity, fraction, size=size, method="exact"), affinity)
        instances.append((affinity, size, fraction, optimum))
    for width in widths:
        relative, absolute = [], []
        start = time.perf_counter()
        for affinity, size, fraction, optimum in instances:
            tree = select_tree(affinity, fraction, size=size, method="beam", beam_width=width)
            cost = tree_cost(tree, affinity)
            absolute.append(cost - optimum)
            relative.append((cost - optimum) / optimum if optimum > 0 else 0.0)
        relative, absolute = np.array(relative), np.array(absolute)
        print(
            f"  {make.__name__:16s} beam_width={width:3d}: optimal on "
            f"{int(np.sum(absolute < 1e-9))}/{trials}; relative gap median "
            f"{np.median(relative):.2%}, mean {relative.mean():.2%}, worst "
            f"{relative.max():.2%}; absolute worst {absolute.max():.4f}; "
            f"{time.perf_counter() - start:.1f} s"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer instances")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    trials = 20 if args.quick else 100
    print("1. Exactness")
    brute_force_check(trials, rng)
    print("2. Exact search")
    fractions = (0.1, 0.25, 0.5, 0.75, 0.9)
    timing(10, 4, "exact", fractions, rng)
    if not args.quick:
        timing(12, 4, "exact", (0.25, 0.5), rng)
        timing(10, 4, "exact", fractions, rng, make=grouped_affinity)
    print("3. Beam search (default beam_width=32)")
    timing(40, 5, "beam", (0.1, 0.25, 0.5, 0.75), rng)
    print("4. Beam gap to the optimum (5-10 tasks, 2-4 blocks, random budgets and prices)")
    for make in (uniform_affinity, grouped_affinity):
        gaps(trials, rng, make, (8, 32))


if __name__ == "__main__":
    main()
