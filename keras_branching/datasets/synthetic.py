"""Synthetic regression tasks in groups whose true grouping is known."""

import math
import numbers

import numpy as np


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"Expected `{name}` to be an int >= 1. Received: {name}={value!r}")
    return int(value)


def synthetic_tasks(
    num_groups,
    tasks_per_group,
    num_examples,
    input_dim=100,
    relatedness=0.9,
    noise=0.01,
    seed=0,
    num_sines=10,
):
    """Regression tasks in groups: related inside a group, unrelated across.

    The generator of the allocation paper's official code (and MMoE's):
    inputs `x ~ N(0, I)`; each group draws two orthonormal directions `u1`,
    `u2`, orthogonal to every other group's; the group's first task has
    weights `w = u1`, the others `w = p u1 + sqrt(1 - p^2) u2` with
    `p = relatedness`; every target is
    `y = w.x + sum_{j=1..10} sin(j w.x + (j - 1)^2) + noise` (`num_sines`
    sets the 10: fewer sines make a function small networks fit well).
    Tasks of one group share most of their signal (cosine similarity `p`
    between their weights); tasks of different groups share none. As in the
    reference, the tasks after the first of a group share one direction, so
    they differ only by their noise.

    Args:
        num_groups: number of groups, >= 1.
        tasks_per_group: tasks in each group, >= 1.
        num_examples: number of examples, >= 1.
        input_dim: input dimension; at least `2 * num_groups`.
        relatedness: `p` in [0, 1], similarity inside a group.
        noise: standard deviation of the Gaussian label noise, >= 0.
        seed: integer seed >= 0; the same seed gives the same data (numpy's
            `default_rng`, independent of any global seed).

    Returns:
        A tuple `(x, y, groups)`: `x` of shape `(num_examples, input_dim)`
        (float32); `y` a dict keyed by task name (`"g0_t0"`, `"g0_t1"`, ...)
        of float32 arrays of shape `(num_examples, 1)`; `groups` the true
        grouping, a list of lists of task names. For the benchmark problem
        of three groups of two tasks: `synthetic_tasks(3, 2, num_examples)`.

    Raises:
        ValueError: for a bad argument (the message echoes it).

    Example:

    >>> x, y, groups = synthetic_tasks(2, 2, num_examples=100, seed=0)
    >>> x.shape, sorted(y), groups
    ((100, 100), ['g0_t0', 'g0_t1', 'g1_t0', 'g1_t1'], [['g0_t0', 'g0_t1'], ['g1_t0', 'g1_t1']])
    """
    num_groups = _check_positive_int("num_groups", num_groups)
    tasks_per_group = _check_positive_int("tasks_per_group", tasks_per_group)
    num_examples = _check_positive_int("num_examples", num_examples)
    input_dim = _check_positive_int("input_dim", input_dim)
    if input_dim < 2 * num_groups:
        raise ValueError(
            "Expected `input_dim` >= 2 * num_groups, so that every group gets "
            f"its own orthonormal directions. Received: input_dim={input_dim} "
            f"with num_groups={num_groups}"
        )
    if (
        isinstance(relatedness, bool)
        or not isinstance(relatedness, numbers.Real)
        or not 0 <= relatedness <= 1
    ):
        raise ValueError(f"Expected `relatedness` in [0, 1]. Received: relatedness={relatedness!r}")
    if (
        isinstance(noise, bool)
        or not isinstance(noise, numbers.Real)
        or not math.isfinite(noise)
        or noise < 0
    ):
        raise ValueError(f"Expected a finite `noise` >= 0. Received: noise={noise!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"Expected `seed` to be an int >= 0. Received: seed={seed!r}")

    if isinstance(num_sines, bool) or not isinstance(num_sines, numbers.Integral) or num_sines < 0:
        raise ValueError(
            f"Expected `num_sines` to be an int >= 0. Received: num_sines={num_sines!r}"
        )

    rng = np.random.default_rng(seed)
    # Orthonormal columns: 2 per group, all mutually orthogonal.
    directions, _ = np.linalg.qr(rng.standard_normal((input_dim, 2 * num_groups)))
    x = rng.standard_normal((num_examples, input_dim))
    alphas = np.arange(1, num_sines + 1, dtype=np.float64)
    betas = (alphas - 1.0) ** 2
    y, groups = {}, []
    for g in range(num_groups):
        u1, u2 = directions[:, 2 * g], directions[:, 2 * g + 1]
        names = []
        for k in range(tasks_per_group):
            w = u1 if k == 0 else relatedness * u1 + np.sqrt(1 - relatedness**2) * u2
            signal = x @ w
            target = signal + np.sin(np.outer(signal, alphas) + betas).sum(axis=1)
            target = target + noise * rng.standard_normal(num_examples)
            name = f"g{g}_t{k}"
            y[name] = target.astype(np.float32)[:, None]
            names.append(name)
        groups.append(names)
    return x.astype(np.float32), y, groups
