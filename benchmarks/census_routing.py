"""Share routing on Census-Income (KDD): shared-bottom, MMoE and the searched plan.

For each seed: search a plan with `ShareRouting` on the training split
(rewarded on the validation split), then train shared-bottom, MMoE and the
searched plan from scratch on the same training split, keep each model's
epoch of best mean validation AUC, and report its per-task test AUC and
parameter count. Prints one row per model and seed, then mean and standard
deviation over seeds, as a Markdown table.

Sizes: MMoE has `--experts` experts of `--units` units; shared-bottom one
expert whose width is chosen so that its parameter count is closest to
MMoE's; the search space has `--layers` layers of `--experts` experts of
`--units` units, so a searched plan is at most about MMoE's size plus its
extra layer (its count is printed).

The data are a fixed-seed split of the official *test* file of
Census-Income, so the numbers are not comparable with published ones.

Default run (3 seeds; 8 minutes measured on 2 shared CPU cores):

    python benchmarks/census_routing.py

Longer runs: `--seeds 5 --epochs 15 --search-epochs 20`; the second MMoE
setup: `--tasks education,marital`; the paper's plain REINFORCE:
`--credit global --entropy-weight 0`.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras_branching  # noqa: F401, E402  (first: it imports TensorFlow without start-up noise)

# isort: split

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_branching.datasets.census import census_income  # noqa: E402
from keras_branching.routing.builder import RoutingModelBuilder  # noqa: E402
from keras_branching.routing.plan import RoutingPlan  # noqa: E402
from keras_branching.routing.search import ShareRouting  # noqa: E402
from keras_branching.task import Task  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.join(HERE, "..", "..", "shared", "data", "census_kdd")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder of census-income.test.gz")
    parser.add_argument("--tasks", default="income,marital")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--layers", type=int, default=2, help="layers of the search space")
    parser.add_argument("--queries", default="input", choices=["input", "all"])
    parser.add_argument("--steps-per-update", type=int, default=2)
    parser.add_argument("--samples-per-update", type=int, default=4)
    parser.add_argument("--entropy-weight", type=float, default=0.5)
    parser.add_argument("--credit", default="tasks", choices=["tasks", "global"])
    parser.add_argument("--tower-units", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=6, help="retraining epochs")
    parser.add_argument("--search-epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    return parser.parse_args(argv)


def make_tasks(names, tower_units):
    def tower():
        return keras.Sequential(
            [
                keras.layers.Dense(tower_units, activation="relu"),
                keras.layers.Dense(1, activation="sigmoid"),
            ]
        )

    return [Task(t, head=tower, loss="binary_crossentropy") for t in names]


def dense_factory(units):
    return lambda: keras.layers.Dense(units, activation="relu")


def builder_for(input_dim, experts, tasks, learning_rate):
    return RoutingModelBuilder(
        (input_dim,), experts, tasks, optimizer=keras.optimizers.Adam(learning_rate)
    )


def auc(y_true, y_score):
    metric = keras.metrics.AUC(num_thresholds=2000)
    metric.update_state(y_true, y_score)
    return float(keras.ops.convert_to_numpy(metric.result()))


def mean_task_auc(model, x, y):
    predictions = model.predict(x, batch_size=4096, verbose=0)
    return {t: auc(y[t], predictions[t]) for t in y}


def train_and_test(model, data, epochs, batch_size):
    """Fits `epochs` epochs; returns test AUCs at the epoch of best validation AUC."""
    (x, y), (xv, yv), (xt, yt) = data["train"], data["validation"], data["test"]
    best, best_weights = -np.inf, None
    for _ in range(epochs):
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
        score = np.mean(list(mean_task_auc(model, xv, yv).values()))
        if score > best:
            best, best_weights = score, model.get_weights()
    model.set_weights(best_weights)
    return mean_task_auc(model, xt, yt), best


def shared_bottom_units(input_dim, target_params, tasks, args):
    """The shared-bottom width whose parameter count is closest to `target_params`."""
    best = None
    for units in range(1, 4 * args.units * args.experts + 1):
        builder = builder_for(input_dim, [dense_factory(units)], tasks, args.learning_rate)
        count = builder.count_params(RoutingPlan.shared_bottom([t.name for t in tasks]))
        if best is None or abs(count - target_params) < abs(best[1] - target_params):
            best = (units, count)
        if count > target_params:
            break
    return best[0]


def main(argv=None):
    args = parse_args(argv)
    names = tuple(args.tasks.split(","))
    data_dir = args.data_dir
    if data_dir is None and not os.environ.get("KERAS_BRANCHING_DATA"):
        data_dir = DEFAULT_DATA
    data = census_income(data_dir, tasks=names, seed=args.split_seed)
    x, y = data["train"]
    input_dim = x.shape[1]
    print(
        f"Census-Income tasks {names}: train {len(x)}, validation "
        f"{len(data['validation'][0])}, test {len(data['test'][0])}, {input_dim} features"
    )
    rows = []  # (model, seed, params, {task: auc})
    start = time.time()
    for seed in range(args.seeds):
        keras.utils.set_random_seed(seed)
        tasks = make_tasks(names, args.tower_units)
        mmoe_builder = builder_for(
            input_dim, [dense_factory(args.units)], tasks, args.learning_rate
        )
        mmoe_plan = RoutingPlan.mmoe(names, args.experts)
        mmoe_params = mmoe_builder.count_params(mmoe_plan)
        sb_units = shared_bottom_units(input_dim, mmoe_params, tasks, args)
        sb_builder = builder_for(input_dim, [dense_factory(sb_units)], tasks, args.learning_rate)

        search_builder = builder_for(
            input_dim, [dense_factory(args.units)] * args.layers, tasks, args.learning_rate
        )
        search = ShareRouting(
            search_builder,
            num_experts=args.experts,
            queries=args.queries,
            entropy_weight=args.entropy_weight,
            credit=args.credit,
            steps_per_update=args.steps_per_update,
            samples_per_update=args.samples_per_update,
            seed=seed,
        )
        t0 = time.time()
        result = search.search(
            x,
            y,
            validation_data=data["validation"],
            epochs=args.search_epochs,
            batch_size=args.batch_size,
            verbose=0,
        )
        plan = result.plan
        print(f"\nseed {seed}: search took {time.time() - t0:.0f}s; searched plan:\n{plan}")
        print(
            "search history (mean validation reward per epoch after the warm-up, "
            "mean policy entropy per epoch):",
            [round(r, 4) for r in result.history["reward"]],
            [round(e, 2) for e in result.history["entropy"]],
        )

        for label, builder, model_plan in (
            ("shared-bottom", sb_builder, RoutingPlan.shared_bottom(names)),
            ("MMoE", mmoe_builder, mmoe_plan),
            ("searched", search_builder, plan),
        ):
            keras.utils.set_random_seed(1000 + seed)
            model = builder.build(model_plan)
            aucs, val = train_and_test(model, data, args.epochs, args.batch_size)
            rows.append((label, seed, model.count_params(), aucs))
            shown = ", ".join(f"{t} {v:.4f}" for t, v in aucs.items())
            print(
                f"seed {seed} {label:<13} params {model.count_params():>6}  test AUC {shown}"
                f"  (best validation mean {val:.4f})",
                flush=True,
            )
    print(
        f"\nTotal time {time.time() - start:.0f}s. Mean and standard deviation over "
        f"{args.seeds} seeds:\n"
    )
    header = "| model | params | " + " | ".join(f"{t} test AUC" for t in names) + " | mean |"
    print(header)
    print("|" + "---|" * (len(names) + 3))
    for label in ("shared-bottom", "MMoE", "searched"):
        mine = [r for r in rows if r[0] == label]
        params = np.mean([r[2] for r in mine])
        cells = []
        for t in names + ("mean",):
            values = [np.mean(list(r[3].values())) if t == "mean" else r[3][t] for r in mine]
            cells.append(f"{np.mean(values):.4f} ± {np.std(values):.4f}")
        print(f"| {label} | {params:.0f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
