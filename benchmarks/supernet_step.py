"""Training step time of a learning-to-branch supernet vs the independent tree.

The supernet has every width equal to the number of tasks, so it holds as
many block copies as the fully independent tree (one per task per block);
the difference is the routers (Gumbel sampling and the mixing of parents)
and the temperature callback. Target: at most 1.5 times the step time of
the independent tree.

Usage:
    python benchmarks/supernet_step.py [--tasks 4] [--blocks 3] [--units 256]
        [--input-dim 100] [--batch 256] [--steps 40] [--repeats 5] [--jit]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras_branching  # noqa: F401, E402  (first: it imports TensorFlow without start-up noise)

# isort: split

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_branching.builder import BranchedModelBuilder  # noqa: E402
from keras_branching.callbacks.temperature import TemperatureSchedule  # noqa: E402
from keras_branching.layers.gumbel_router import GumbelRouter  # noqa: E402
from keras_branching.learn_to_branch import build_supernet  # noqa: E402
from keras_branching.task import Task  # noqa: E402


def _builder(args):
    return BranchedModelBuilder(
        inputs=(args.input_dim,),
        blocks=[lambda: keras.layers.Dense(args.units, activation="relu")] * args.blocks,
        tasks=[
            Task(f"t{i}", head=lambda: keras.layers.Dense(1), loss="mse") for i in range(args.tasks)
        ],
        optimizer="adam",
    )


def _step_times(runs, x, y, args):
    """Best seconds per training step of each `(model, callbacks)` run.

    The runs are interleaved, `repeats` rounds of one `steps`-step epoch
    each, and the minimum is kept: on a shared machine the minimum is the
    least disturbed measurement.
    """
    fits = [dict(batch_size=args.batch, verbose=0, callbacks=list(cb)) for _, cb in runs]
    for (model, _), fit in zip(runs, fits):
        model.fit(x, y, epochs=1, **fit)  # trace and warm up
    times = [[] for _ in runs]
    for _ in range(args.repeats):
        for (model, _), fit, out in zip(runs, fits, times):
            start = time.perf_counter()
            model.fit(x, y, epochs=1, **fit)
            out.append((time.perf_counter() - start) / args.steps)
    return [min(t) for t in times]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--input-dim", type=int, default=100)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--jit", action="store_true", help="compile with jit_compile=True")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    n = args.batch * args.steps
    x = rng.standard_normal((n, args.input_dim)).astype("float32")
    y = {f"t{i}": rng.standard_normal((n, 1)).astype("float32") for i in range(args.tasks)}
    builder = _builder(args)
    jit = {"jit_compile": True} if args.jit else {}

    independent = builder.build(builder.independent_tree(), **jit)
    widths = [args.tasks] * args.blocks
    supernet = build_supernet(builder, widths, router_learning_rate=0.03, seed=0, **jit)
    routers = [layer for layer in supernet.layers if isinstance(layer, GumbelRouter)]
    assert (
        independent.count_params() + sum(router.count_params() for router in routers)
        == supernet.count_params()
    ), "the two models should hold the same block copies"

    t_independent, t_supernet, t_supernet_plain = _step_times(
        [(independent, []), (supernet, [TemperatureSchedule()]), (supernet, [])], x, y, args
    )
    print(
        f"tasks={args.tasks} blocks={args.blocks} units={args.units} batch={args.batch} "
        f"jit={args.jit} backend={keras.backend.backend()}"
    )
    print(f"independent tree:                 {1e3 * t_independent:8.2f} ms/step")
    print(f"supernet widths={widths}:  {1e3 * t_supernet:8.2f} ms/step (with TemperatureSchedule)")
    print(f"supernet, no callback:            {1e3 * t_supernet_plain:8.2f} ms/step")
    print(f"ratio supernet / independent:     {t_supernet / t_independent:8.2f} (target <= 1.5)")
    print(f"ratio without the callback:       {t_supernet_plain / t_independent:8.2f}")


if __name__ == "__main__":
    main()
