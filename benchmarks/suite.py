"""The benchmark suite: every method against the baselines and random plans of its size.

    python benchmarks/suite.py PROBLEM [--methods M1,M2] [--seeds N] [--quick] [--out DIR]

PROBLEM is one of `benchmarks/suite_problems.PROBLEMS` (`synthetic`,
`multi_mnist`, `omniglot`, `census`, `census_education`). For each seed, on
the same splits (the data are loaded once; seeds change the initial weights
and the searches' noise), the suite trains and tests:

- the fully shared and the fully independent model (trees; on a problem
  without trees, the allocation network's);
- every method's search through `search(...)`, then its plan retrained from
  fresh weights (learned allocation: the searched network evaluated as
  trained, as the paper does, with no retraining);
- `random_plans` random plans at the size of each searched plan
  (`keras_branching.evaluation`), each trained like the retrained plan;
- for share routing, shared-bottom and MMoE at the size closest to the
  searched plan's; for learned allocation, the shared and independent
  allocation networks.

Every model trains for the problem's `epochs` with Adam and is tested at
its last epoch. The suite prints one line per run (elapsed time first),
then writes to `--out` (default `benchmark_results/PROBLEM`):
`results.json` (settings, every run, the summary), `results.md` (the
summary table) and `pareto.png` (mean test metric against parameters, one
point per model, the Pareto front marked). Columns: docs/benchmarks.md.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras_branching as kb  # noqa: E402  (first: it imports TensorFlow quietly)

# isort: split

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_branching import evaluation  # noqa: E402
from keras_branching.allocation import export_allocation_network  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from suite_problems import METHODS, PROBLEMS  # noqa: E402

FAMILY = {
    "AffinityBranching": "tree",
    "LearnToBranch": "tree",
    "ShareRouting": "routing",
    "LearnedAllocation": "allocation",
}
LOWER_IS_BETTER = {"mse"}


# Metrics.


def auc(y_true, y_score):
    metric = keras.metrics.AUC(num_thresholds=2000)
    metric.update_state(y_true, y_score)
    return float(keras.ops.convert_to_numpy(metric.result()))


def score(metric, y_true, prediction):
    """The test metric of one task from its targets and the model's output."""
    y_true, prediction = np.asarray(y_true), np.asarray(prediction)
    if metric == "mse":
        return float(np.mean((prediction.reshape(y_true.shape) - y_true) ** 2))
    if metric == "auc":
        return auc(y_true.reshape(-1), prediction.reshape(-1))
    if prediction.shape[-1] == 1:  # a sigmoid output
        labels = (prediction.reshape(-1) > 0.5).astype(int)
    else:
        labels = np.argmax(prediction, axis=-1)
    return float(np.mean(labels == y_true.reshape(-1)))


def better(metric, a, b):
    """Whether value `a` of `metric` is better than `b`."""
    return a < b if metric in LOWER_IS_BETTER else a > b


# The runs of one problem.


def predict(model, x, batch_size=1024):
    """`model`'s outputs on `x`, called batch by batch (no `predict` function to trace)."""
    chunks = [
        keras.tree.map_structure(
            keras.ops.convert_to_numpy, model(x[i : i + batch_size], training=False)
        )
        for i in range(0, len(x), batch_size)
    ]
    return keras.tree.map_structure(lambda *parts: np.concatenate(parts), *chunks)


def predict_per_task(model, x, batch_size=256):
    """The outputs of a model with per-task inputs, every task on its own inputs `x[task]`.

    Each call feeds every task a chunk of its inputs (the tasks' blocks may be
    shared, so a task is not computed alone); a task past its last input gets
    its first one, whose output is dropped.
    """
    chunks = {t: [] for t in x}
    for i in range(0, max(len(v) for v in x.values()), batch_size):
        batch = {t: v[i : i + batch_size] if i < len(v) else v[:1] for t, v in x.items()}
        outputs = model(batch, training=False)
        for t, v in x.items():
            if i < len(v):
                chunks[t].append(keras.ops.convert_to_numpy(outputs[t]))
    return {t: np.concatenate(parts) for t, parts in chunks.items()}


class Progress:
    """One line per run, with the time since the start."""

    def __init__(self):
        self.start = time.time()

    def __call__(self, message):
        print(f"[{time.time() - self.start:7.1f}s] {message}", flush=True)


class Runner:
    """Trains and tests every model of one problem, seed after seed."""

    def __init__(self, problem, quick, progress):
        self.problem = problem
        self.settings = problem.settings["quick" if quick else "full"]
        self.progress = progress
        start = time.time()
        self.data = problem.load(quick)
        self.groups = self.data.get("groups")
        self.tasks = problem.tasks(self.data)
        self.names = [t.name for t in self.tasks]
        x = self.data["train"][0]
        shapes = {t: tuple(v.shape[1:]) for t, v in x.items()} if isinstance(x, dict) else None
        self.input_shape = shapes if problem.per_task_inputs else tuple(x.shape[1:])
        progress(f"{problem.name}: data loaded in {time.time() - start:.1f}s ({self.describe()})")
        self.records = []
        # Tiny runs: tracing a model's train step costs more than running it eagerly.
        self.compile_kwargs = {"run_eagerly": True} if self.settings.get("run_eagerly") else {}

    def describe(self):
        x = self.data["train"][0]
        count = sum(len(v) for v in x.values()) if isinstance(x, dict) else len(x)
        return f"{len(self.names)} tasks, {count} training examples"

    def optimizer(self):
        return keras.optimizers.Adam(self.settings["learning_rate"])

    # Builders.

    def tree_builder(self):
        blocks = self.problem.blocks(self.data)
        return kb.BranchedModelBuilder(self.input_shape, blocks, self.tasks, self.optimizer())

    def routing_builder(self, units=None, layers=None, num_layers=None):
        units = units or self.settings["routing_units"]
        num_layers = num_layers or self.settings["routing_layers"]
        width = int(np.prod(self.input_shape))
        experts = [self.problem.expert(units)] * num_layers
        return kb.RoutingModelBuilder((width,), experts, self.tasks, self.optimizer())

    def allocation_builder(self):
        layers = self.problem.allocation_layers(self.data)
        return kb.AllocationBuilder(self.input_shape, layers, self.tasks, self.optimizer())

    # Data.

    def arrays(self, split, family):
        x, y = self.data[split]
        if family == "routing":
            x = x.reshape(len(x), -1)
        return x, y

    def fit_data(self, family, seed):
        """`(x, y, fit kwargs)` of the training split for `family`'s models."""
        s = self.settings
        if self.problem.per_task_inputs:
            import tensorflow as tf

            x, y = self.data["train"]
            datasets = {t: tf.data.Dataset.from_tensor_slices((x[t], y[t])) for t in self.names}
            batches = kb.datasets.task_batches(datasets, s["batch_size"], seed=seed)
            return batches, None, {"steps_per_epoch": s["steps_per_epoch"], "shuffle": False}
        x, y = self.arrays("train", family)
        return x, y, {"batch_size": s["batch_size"]}

    def validation_data(self, family):
        """The validation split as `validation_data` (per-task inputs: one pass of
        per-task batches, since the tasks have different numbers of examples)."""
        if not self.problem.per_task_inputs:
            return self.arrays("validation", family)
        import tensorflow as tf

        x, y = self.data["validation"]
        datasets = {t: tf.data.Dataset.from_tensor_slices((x[t], y[t])) for t in self.names}
        return kb.datasets.task_batches(
            datasets, self.settings["batch_size"], shuffle=False, repeat=False
        )

    def test(self, model, family, split="test"):
        """The metric of every task on `split`."""
        x, y = self.data[split] if self.problem.per_task_inputs else self.arrays(split, family)
        if self.problem.per_task_inputs:
            predictions = predict_per_task(model, x)
        else:
            predictions = predict(model, x)
        return {t: score(self.problem.metric, y[t], predictions[t]) for t in self.names}

    def train(self, model, family, seed):
        x, y, kwargs = self.fit_data(family, seed)
        start = time.time()
        model.fit(x, y, epochs=self.settings["epochs"], verbose=0, **kwargs)
        return time.time() - start

    # Recording.

    def structure(self, plan):
        """Whether `plan` recovers the true groups, with the measures behind it."""
        if not self.groups:
            return None, None
        if isinstance(plan, kb.BranchingTree):
            block = evaluation.grouping_block(plan)
            found = [list(g) for g in plan.groups(block)]
            return evaluation.tree_recovers_groups(plan, self.groups), {
                "block": block,
                "groups": found,
            }
        if isinstance(plan, kb.Allocation):
            measures = evaluation.allocation_group_permutation_test(plan, self.groups)
        else:
            kwargs = self.settings.get("ShareRouting", {})
            measures = evaluation.routing_group_separation(
                plan,
                self.groups,
                num_samples=200,
                max_route_size=kwargs.get("max_route_size"),
                queries=kwargs.get("queries", "input"),
            )
        return measures["recovered"], measures

    def record(self, seed, label, kind, family, method, model, plan, train_s, search_s=0.0):
        test = self.test(model, family)
        recovered, measures = self.structure(plan) if plan is not None else (None, None)
        row = {
            "seed": seed,
            "label": label,
            "kind": kind,
            "family": family,
            "method": method,
            "params": int(model.count_params()),
            "test": test,
            "mean": float(np.mean(list(test.values()))),
            "search_s": round(search_s, 2),
            "train_s": round(train_s, 2),
            "recovered": recovered,
            "structure": measures,
            "plan": None if plan is None else {"type": type(plan).__name__, **plan.to_config()},
        }
        self.records.append(row)
        timing = f"search {search_s:.1f}s + " if search_s else ""
        found = "" if recovered is None else f", recovers groups: {'yes' if recovered else 'no'}"
        self.progress(
            f"seed {seed} {label:<34} {timing}train {train_s:.1f}s, params {row['params']:,}, "
            f"mean test {self.problem.metric} {row['mean']:.4f}{found}"
        )
        return row

    def train_plan(self, seed, label, kind, family, method, builder, plan):
        keras.utils.set_random_seed(10_000 + seed)
        model = builder.build(plan, **self.compile_kwargs)
        seconds = self.train(model, family, seed)
        return self.record(seed, label, kind, family, method, model, plan, seconds)

    # One seed.

    def run_seed(self, seed, methods):
        problem = self.problem
        if problem.blocks is not None:
            builder = self.tree_builder()
            for label, plan in (
                ("shared", builder.shared_tree()),
                ("independent", builder.independent_tree()),
            ):
                self.train_plan(seed, label, "baseline", "tree", None, builder, plan)
        allocation = "LearnedAllocation" in methods and problem.allocation_layers is not None
        if allocation or problem.blocks is None:
            builder = self.allocation_builder()
            suffix = " (allocation network)" if problem.blocks is not None else ""
            for label, plan in (
                ("shared" + suffix, builder.shared_allocation()),
                ("independent" + suffix, builder.independent_allocation()),
            ):
                self.train_plan(seed, label, "baseline", "allocation", None, builder, plan)
        for method in methods:
            self.run_method(seed, method)

    def method_settings(self, method):
        kwargs = dict(self.settings[method])
        epochs = kwargs.pop("search_epochs")
        return epochs, kwargs

    def run_method(self, seed, method):
        family = FAMILY[method]
        epochs, kwargs = self.method_settings(method)
        if family == "tree":
            builder = self.tree_builder()
            if kwargs.get("budget") == "groups":
                # The true grouping's tree: the first block shared, the true
                # groups after it (the size structure_recovery.py measures at).
                partition = [list(g) for g in self.groups]
                true_tree = kb.BranchingTree(
                    self.names, [[self.names]] + [partition] * (builder.num_blocks - 1)
                )
                kwargs["budget"] = builder.count_params(true_tree)
        elif family == "routing":
            builder = self.routing_builder()
        else:
            builder = self.allocation_builder()
        if isinstance(kwargs.get("metric"), str):  # settings stay JSON: a metric by name
            kwargs["metric"] = getattr(keras.metrics, kwargs["metric"])()
        search = getattr(kb, method)(builder, seed=seed, **kwargs)
        x, y, fit_kwargs = self.fit_data(family, seed)
        if method in ("AffinityBranching", "ShareRouting"):
            fit_kwargs["validation_data"] = self.validation_data(family)
        start = time.time()
        result = search.search(x, y, epochs=epochs, verbose=0, **fit_kwargs)
        search_s = time.time() - start
        if family == "allocation":
            model = export_allocation_network(builder, search.model)
            row = self.record(
                seed, method, "searched", family, method, model, result.plan, 0.0, search_s
            )
        else:
            keras.utils.set_random_seed(10_000 + seed)
            model = result.build(**self.compile_kwargs)
            train_s = self.train(model, family, seed)
            row = self.record(
                seed, method, "searched", family, method, model, result.plan, train_s, search_s
            )
        target = builder.count_params(result.plan)
        self.run_random(seed, method, family, builder, target, kwargs)
        if family == "routing":
            self.run_routing_baselines(seed, target, kwargs["num_experts"])
        return row

    def run_random(self, seed, method, family, builder, target, kwargs):
        label = f"random at {method} size"
        for k in range(self.settings["random_plans"]):
            plan_seed = 1000 * seed + k
            if family == "tree":
                plan = evaluation.random_tree(builder, target, seed=plan_seed)
            elif family == "routing":
                plan = evaluation.random_routing_plan(
                    builder,
                    target,
                    kwargs["num_experts"],
                    seed=plan_seed,
                    max_route_size=kwargs.get("max_route_size"),
                    queries=kwargs.get("queries", "input"),
                )
            else:
                plan = evaluation.random_allocation(builder, target, seed=plan_seed)
            self.train_plan(seed, label, "random", family, method, builder, plan)

    def run_routing_baselines(self, seed, target, num_experts):
        """MMoE (experts of the search's width) and shared-bottom (one expert of some
        width) with the parameter counts closest to `target`."""
        units = self.settings["routing_units"]
        one_layer = self.routing_builder(units, num_layers=1)
        counts = {
            k: one_layer.count_params(kb.RoutingPlan.mmoe(self.names, k))
            for k in range(1, 4 * num_experts + 1)
        }
        experts = min(counts, key=lambda k: abs(counts[k] - target))
        self.train_plan(
            seed,
            "MMoE",
            "baseline",
            "routing",
            "ShareRouting",
            one_layer,
            kb.RoutingPlan.mmoe(self.names, experts),
        )
        plan = kb.RoutingPlan.shared_bottom(self.names)

        def size(width):
            return self.routing_builder(width, num_layers=1).count_params(plan)

        low, high = 1, 2
        while size(high) < target and high < 1 << 16:
            low, high = high, 2 * high
        while high - low > 1:  # sizes grow with the width
            middle = (low + high) // 2
            low, high = (middle, high) if size(middle) < target else (low, middle)
        width = min((low, high), key=lambda w: abs(size(w) - target))
        self.train_plan(
            seed,
            "shared-bottom",
            "baseline",
            "routing",
            "ShareRouting",
            self.routing_builder(width, num_layers=1),
            plan,
        )


# The summary.


def spread(values):
    return float(np.mean(values)), float(np.std(values))


def summarise(records, metric, names):
    """One row per model label: means and spreads over its runs."""
    labels = list(dict.fromkeys(r["label"] for r in records))
    reference = {}
    for r in records:
        if r["label"] in ("independent", "independent (allocation network)"):
            reference.setdefault(r["seed"], r["train_s"])
    rows = []
    for label in labels:
        mine = [r for r in records if r["label"] == label]
        row = {
            "label": label,
            "kind": mine[0]["kind"],
            "method": mine[0]["method"],
            "runs": len(mine),
            "params": float(np.mean([r["params"] for r in mine])),
            "test": {t: spread([r["test"][t] for r in mine]) for t in names},
            "mean": spread([r["mean"] for r in mine]),
            "search_s": float(np.mean([r["search_s"] for r in mine])),
            "train_s": float(np.mean([r["train_s"] for r in mine])),
        }
        known = [r["recovered"] for r in mine if r["recovered"] is not None]
        row["recovered"] = f"{sum(known)}/{len(known)}" if known else None
        if row["kind"] == "searched":
            ratios = [
                (r["search_s"] + r["train_s"]) / reference[r["seed"]]
                for r in mine
                if reference.get(r["seed"])
            ]
            row["cost_ratio"] = float(np.mean(ratios)) if ratios else None
            wins = 0
            for r in mine:
                pool = [
                    q["mean"]
                    for q in records
                    if q["kind"] == "random"
                    and q["method"] == r["method"]
                    and q["seed"] == r["seed"]
                ]
                wins += bool(pool) and better(metric, r["mean"], float(np.median(pool)))
            row["beats_random_median"] = f"{wins}/{len(mine)}"
        rows.append(row)
    return rows


def pareto(rows, metric):
    """Labels of the rows no other row beats on both parameters and metric."""
    front = []
    for row in rows:
        dominated = any(
            other["params"] <= row["params"]
            and not better(metric, row["mean"][0], other["mean"][0])
            and (
                other["params"] < row["params"] or better(metric, other["mean"][0], row["mean"][0])
            )
            for other in rows
            if other is not row
        )
        if not dominated:
            front.append(row["label"])
    return front


def markdown(problem, rows, names, settings, seeds, skipped, quick, seconds):
    metric = problem.metric
    lines = [
        f"## {problem.name}{' (--quick)' if quick else ''}",
        "",
        f"{problem.description}. Test {metric} "
        f"({'lower' if metric in LOWER_IS_BETTER else 'higher'} is better), mean ± standard "
        f"deviation over {len(seeds)} seed{'s' * (len(seeds) != 1)} "
        f"(random plans: over all draws of every seed). Total time {seconds:.0f}s.",
        "",
        "| model | runs | params | "
        + " | ".join(names)
        + " | mean | search s | train s | cost ratio | beats random median | recovers groups |",
        "|---" * (len(names) + 9) + "|",
    ]

    def cell(value):
        return "–" if value is None else value

    for row in rows:
        cells = [f"{m:.4f} ± {s:.4f}" for m, s in (row["test"][t] for t in names)]
        ratio = row.get("cost_ratio")
        lines.append(
            f"| {row['label']} | {row['runs']} | {row['params']:,.0f} | "
            + " | ".join(cells)
            + f" | **{row['mean'][0]:.4f}** ± {row['mean'][1]:.4f} | "
            + f"{row['search_s']:.1f} | {row['train_s']:.1f} | "
            + f"{cell(None if ratio is None else f'{ratio:.2f}')} | "
            + f"{cell(row.get('beats_random_median'))} | {cell(row['recovered'])} |"
        )
    if skipped:
        lines += ["", "Skipped:"] + [f"- {m}: {reason}" for m, reason in skipped.items()]
    lines += ["", f"Settings: `{json.dumps(settings)}`", ""]
    return "\n".join(lines)


def plot(problem, rows, front, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for row in rows:
        on_front = row["label"] in front
        colour = {"baseline": "tab:blue", "searched": "tab:red", "random": "tab:gray"}[row["kind"]]
        ax.errorbar(
            row["params"],
            row["mean"][0],
            yerr=row["mean"][1],
            fmt="*" if on_front else "o",
            markersize=12 if on_front else 6,
            color=colour,
            capsize=3,
        )
        ax.annotate(
            row["label"],
            (row["params"], row["mean"][0]),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    points = sorted((r["params"], r["mean"][0]) for r in rows if r["label"] in front)
    if points:
        ax.step(*zip(*points), where="post", color="black", linewidth=0.8, label="Pareto front")
        ax.legend(loc="best", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"mean test {problem.metric}")
    ax.set_title(f"{problem.name}: baselines (blue), searched (red), random plans (grey)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# The command line.


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problem", choices=sorted(PROBLEMS))
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated subset of {METHODS}"
    )
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (0 to N-1)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="one seed, tiny data and steps")
    parser.add_argument("--out", default=None, help="folder of the results")
    args = parser.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; expected a subset of {list(METHODS)}")
    if args.quick:
        args.seeds = 1
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.out is None:
        args.out = os.path.join(
            "benchmark_results", args.problem + ("_quick" if args.quick else "")
        )
    return args


def applicable(problem, methods):
    """The methods that run, and the reason each other one is skipped."""
    skipped, run = {}, []
    needs = {
        "tree": problem.blocks,
        "routing": problem.expert,
        "allocation": problem.allocation_layers,
    }
    for method in methods:
        if method in problem.skip:
            skipped[method] = problem.skip[method]
        elif needs[FAMILY[method]] is None:
            skipped[method] = f"the problem defines no {FAMILY[method]} network"
        else:
            run.append(method)
    return run, skipped


def main(argv=None):
    args = parse_args(argv)
    problem = PROBLEMS[args.problem]
    progress = Progress()
    methods, skipped = applicable(problem, args.methods)
    for method, reason in skipped.items():
        progress(f"skipping {method}: {reason}")
    runner = Runner(problem, args.quick, progress)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    for seed in seeds:
        runner.run_seed(seed, methods)
    seconds = time.time() - progress.start
    rows = summarise(runner.records, problem.metric, runner.names)
    front = pareto(rows, problem.metric)
    os.makedirs(args.out, exist_ok=True)
    settings = runner.settings
    table = markdown(problem, rows, runner.names, settings, seeds, skipped, args.quick, seconds)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(
            {
                "problem": problem.name,
                "description": problem.description,
                "protocol": problem.protocol,
                "metric": problem.metric,
                "quick": args.quick,
                "seeds": seeds,
                "methods": methods,
                "skipped": skipped,
                "settings": settings,
                "groups": runner.groups,
                "total_seconds": round(seconds, 1),
                "summary": rows,
                "pareto_front": front,
                "runs": runner.records,
            },
            f,
            indent=1,
        )
    plot(problem, rows, front, os.path.join(args.out, "pareto.png"))
    print("\n" + table)
    print(f"Pareto front: {', '.join(front)}")
    print(f"Wrote results.json, results.md and pareto.png to {args.out}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
