"""Training-step speed-up of fused models (stacked copies) over separate copies.

For each case the same model is built twice, with separate copies (one
layer per block copy, `fuse=False`) and fused (`fuse=True`: one
`StackedBlock` per block depth), and both train on the same batch with
`model.train_on_batch`, after a warm-up, in paired alternation: a chunk of
steps of the separate model, then one of the fused model, `--repeats`
times. The speed-up is the median over the pairs of separate / fused step
time. TensorFlow runs in this process, JAX in a subprocess
(`KERAS_BACKEND=jax`), each with and without XLA (`jit_compile`).

Cases (targets from issue 15):
  independent_40x3xDense16   independent tree, 40 tasks, 3 Dense(16) blocks (>= 3x)
  supernet_40_2-8-40         learning-to-branch supernet, Dense(32) blocks (>= 2.5x)
  independent_20x3xDense64   independent tree, 20 tasks, 3 Dense(64) blocks (>= 1.5x)
  omniglot_20                the Omniglot CPU protocol network (4 conv blocks), 20 tasks
  plus rows for the `fuse="auto"` rule: few copies of large blocks.

Usage:
    python benchmarks/fused_copies.py [--quick] [--out DIR] [--backends tensorflow,jax]
        [--repeats 7] [--batch 64] [--cases NAME,...]

`--quick` runs two tiny cases without XLA (the CI smoke test; one case in
the subprocess's backend); `--out DIR`
writes `DIR/fused_copies.md` and `DIR/fused_copies.json`.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: (kind, tasks, blocks, widths or None, target speed-up or None)
CASES = {
    "independent_40x3xDense16": ("dense", 40, [16, 16, 16], None, 3.0),
    "supernet_40_2-8-40": ("supernet", 40, [32, 32, 32], [2, 8, 40], 2.5),
    "independent_20x3xDense64": ("dense", 20, [64, 64, 64], None, 1.5),
    "omniglot_20": ("omniglot", 20, None, None, None),
    "independent_2x3xDense512": ("dense", 2, [512, 512, 512], None, None),
    "independent_4x3xDense256": ("dense", 4, [256, 256, 256], None, None),
    "independent_8x3xDense128": ("dense", 8, [128, 128, 128], None, None),
}
QUICK_CASES = {
    "quick_independent_4x2xDense8": ("dense", 4, [8, 8], None, None),
    "quick_supernet_4_2-4": ("supernet", 4, [8, 8], [2, 4], None),
}
INPUT_DIM = 32
OMNIGLOT_SIZE, OMNIGLOT_CLASSES = 28, 20


def _builder(kind, num_tasks, units, seed=0):
    import keras

    from keras_branching.builder import BranchedModelBuilder
    from keras_branching.task import Task

    names = [f"t{i}" for i in range(num_tasks)]
    if kind == "omniglot":
        sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
        from suite_problems import omniglot_blocks

        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        tasks = [
            Task(n, head=lambda: keras.layers.Dense(OMNIGLOT_CLASSES), loss=loss) for n in names
        ]
        return BranchedModelBuilder(
            (OMNIGLOT_SIZE, OMNIGLOT_SIZE, 1), omniglot_blocks(), tasks, seed=seed
        )
    blocks = [lambda u=u: keras.layers.Dense(u, activation="relu") for u in units]
    tasks = [Task(n, head=lambda: keras.layers.Dense(1), loss="mse") for n in names]
    return BranchedModelBuilder((INPUT_DIM,), blocks, tasks, seed=seed)


def _models(case, jit):
    """`(separate, fused)` compiled models of a case, and one batch `(x, y)`."""
    import numpy as np

    from keras_branching.learn_to_branch import build_supernet

    kind, num_tasks, units, widths, _ = case
    builder = _builder(kind, num_tasks, units)
    if kind == "supernet":
        models = [
            build_supernet(builder, widths, seed=0, fuse=fuse, jit_compile=jit)
            for fuse in (False, True)
        ]
    else:
        tree = builder.independent_tree()
        models = [builder.build(tree, fuse=fuse, jit_compile=jit) for fuse in (False, True)]
    rng = np.random.default_rng(0)
    batch = _ARGS.batch
    if kind == "omniglot":
        x = rng.random((batch, OMNIGLOT_SIZE, OMNIGLOT_SIZE, 1)).astype("float32")
        y = {t: rng.integers(0, OMNIGLOT_CLASSES, (batch,)) for t in builder.task_names}
    else:
        x = rng.standard_normal((batch, INPUT_DIM)).astype("float32")
        y = {t: rng.standard_normal((batch, 1)).astype("float32") for t in builder.task_names}
    return models, x, y


def _chunk(model, x, y, steps):
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)  # returns numbers: the step has finished
    return (time.perf_counter() - start) / steps


def measure(name, case, jit, repeats):
    """One row: median step times and the median paired speed-up."""
    from keras_branching.layers.stacked import StackedBlock

    models, x, y = _models(case, jit)
    if not any(isinstance(layer, StackedBlock) for layer in models[1].layers):
        raise RuntimeError(f"The fused model of {name} holds no StackedBlock")
    warm = [min(_chunk(m, x, y, 1) for _ in range(3)) for m in models]  # trace, warm up
    seconds = 0.02 if _ARGS.quick else 0.25  # per chunk
    steps = max(1, min(20, int(seconds / max(warm))))
    pairs = []
    for _ in range(repeats):
        pairs.append([_chunk(m, x, y, steps) for m in models])
    ratios = [s / f for s, f in pairs]
    import keras

    return {
        "case": name,
        "backend": keras.backend.backend(),
        "jit_compile": jit,
        "separate_ms": 1e3 * statistics.median(p[0] for p in pairs),
        "fused_ms": 1e3 * statistics.median(p[1] for p in pairs),
        "speedup": statistics.median(ratios),
        "target": case[4],
        "params": int(models[0].count_params()),
        "steps_per_chunk": steps,
        "pairs": repeats,
    }


def run_backend(cases, jits, repeats):
    rows = []
    for name, case in cases.items():
        for jit in jits:
            row = measure(name, case, jit, repeats)
            print(_line(row), file=sys.stderr, flush=True)
            rows.append(row)
    return rows


def _line(row):
    target = "" if row["target"] is None else f" (target {row['target']:g}x)"
    return (
        f"{row['backend']:>10} jit={str(row['jit_compile']):5} {row['case']:26} "
        f"separate {row['separate_ms']:8.2f} ms  fused {row['fused_ms']:8.2f} ms  "
        f"speed-up {row['speedup']:5.2f}x{target}"
    )


def markdown(rows, command):
    lines = [
        f"Command: `{command}`",
        "",
        "| case | backend | jit_compile | separate ms/step | fused ms/step | speed-up | target |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        target = "" if r["target"] is None else f">= {r['target']:g}x"
        lines.append(
            f"| {r['case']} | {r['backend']} | {r['jit_compile']} | {r['separate_ms']:.2f} | "
            f"{r['fused_ms']:.2f} | {r['speedup']:.2f}x | {target} |"
        )
    return "\n".join(lines) + "\n"


_ARGS = None


def main(argv=None):
    global _ARGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two tiny cases, no XLA (CI)")
    parser.add_argument("--out", help="folder for fused_copies.md and fused_copies.json")
    parser.add_argument("--backends", default="tensorflow,jax")
    parser.add_argument("--repeats", type=int, default=None, help="paired chunks per row")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--cases", default=None, help="comma-separated case names")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    _ARGS = args = parser.parse_args(argv)
    cases = QUICK_CASES if args.quick else CASES
    if args.cases:
        cases = {n: c for n, c in {**CASES, **QUICK_CASES}.items() if n in args.cases.split(",")}
    repeats = args.repeats or (1 if args.quick else 7)
    jits = [False] if args.quick else [False, True]

    if args.worker:  # one backend, in this process; rows as JSON on stdout
        if args.quick and not args.cases:  # the smoke test: one case is enough here
            cases = dict(list(cases.items())[:1])
        rows = run_backend(cases, jits, repeats)
        print(json.dumps(rows))
        return rows

    rows = []
    for backend in args.backends.split(","):
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        if backend == "jax":
            env.setdefault("JAX_PLATFORMS", "cpu")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
        if backend == os.environ.get("KERAS_BACKEND", "tensorflow"):
            os.environ.update(KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
            rows += run_backend(cases, jits, repeats)  # in this process
            continue
        worker = [sys.executable, os.path.abspath(__file__), *(argv or sys.argv[1:])]
        worker += ["--worker", backend]
        done = subprocess.run(worker, env=env, capture_output=True, text=True, cwd=ROOT)
        sys.stderr.write(done.stderr[-20000:] if done.returncode else "")
        if done.returncode:
            raise SystemExit(f"The {backend} run failed (exit {done.returncode})")
        for row in json.loads(done.stdout.strip().splitlines()[-1]):
            print(_line(row), file=sys.stderr)
            rows.append(row)
    command = "python benchmarks/fused_copies.py " + " ".join(argv or sys.argv[1:])
    table = markdown(rows, command.strip())
    print(table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "fused_copies.md"), "w") as f:
            f.write(table)
        with open(os.path.join(args.out, "fused_copies.json"), "w") as f:
            json.dump({"quick": args.quick, "batch": args.batch, "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
