"""One process of a `keras.distribution` run: a tree model and the searches.

Run as a script (the tests and `benchmarks/distributed_throughput.py` start
it in fresh processes, with `KERAS_BACKEND=jax`):

    python tests/distributed_jax/worker.py OUT_DIR --devices 2
    python tests/distributed_jax/worker.py OUT_DIR --num-processes 2 --process-id 0 --port P

`--devices` is the number of CPU devices of this process (XLA's host
device count); with more than one device in all, the work runs under
`keras.distribution.DataParallel`. With `--reference` it first runs
without a distribution (on one device), and adds that record as
`"reference"`. One process also runs ShareRouting and AffinityBranching
(on numpy arrays). With `--num-processes` above 1 it first
calls `keras.distribution.initialize` with the coordinator on
127.0.0.1:`port` (JAX's gloo CPU collectives). Every process writes
`OUT_DIR/process_<i>.json`: the losses of every epoch, the plans, the
number of processes and devices; and asks `plot_tree` to save
`OUT_DIR/plot_<i>.png`, which only process 0 does. With `--benchmark N`
it only times `fit` of one tree model (N epochs) and writes examples/s.
"""

import argparse
import json
import os
import sys
import time


def _parse(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--benchmark", type=int, default=0)
    parser.add_argument("--reference", action="store_true")
    return parser.parse_args(argv)


def _setup(args):
    """Devices, `jax.distributed` and the distribution; returns the distribution or None."""
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    jax.config.update("jax_num_cpu_devices", args.devices)
    import keras

    if args.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        keras.distribution.initialize(
            f"127.0.0.1:{args.port}", num_processes=args.num_processes, process_id=args.process_id
        )
    devices = keras.distribution.list_devices("cpu")
    if len(devices) == 1:
        return None
    return keras.distribution.DataParallel(devices=devices)


def _problem():
    import keras

    import keras_branching as kb

    x, y, _ = kb.datasets.synthetic_tasks(2, 2, num_examples=64, input_dim=8, seed=0)
    names = list(y)
    builder = kb.BranchedModelBuilder(
        inputs=(8,),
        blocks=[lambda: keras.layers.Dense(8, activation="tanh")] * 3,
        tasks=[kb.Task(t, head=lambda: keras.layers.Dense(1), loss="mse") for t in names],
        optimizer=keras.optimizers.Adam(1e-2),
    )
    return x, y, names, builder


def _dataset(x, y, batch_size=32):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True)


def _run(args):
    import keras

    import keras_branching as kb
    from keras_branching.datasets.batches import task_batches
    from keras_branching.plotting import plot_tree

    x, y, names, builder = _problem()
    tree = kb.BranchingTree(names, [[names], [names[:2], names[2:]], [[t] for t in names]])
    record = {}

    keras.utils.set_random_seed(0)
    model = builder.build(tree)
    record["tree"] = model.fit(_dataset(x, y), epochs=2, shuffle=False, verbose=0).history["loss"]

    search = kb.LearnToBranch(builder, widths=[2, 2, 4], seed=0)
    found = search.search(_dataset(x, y), epochs=2, verbose=0)
    record["learn_to_branch"] = found.history["loss"]
    record["learn_to_branch_plan"] = found.plan.to_config()

    def dense():
        return keras.layers.Dense(8, activation="tanh")

    allocations = kb.AllocationBuilder(
        dict.fromkeys(names, (8,)), [[dense, dense], [dense, dense]], builder.tasks
    )
    import tensorflow as tf

    batches = task_batches(
        {t: tf.data.Dataset.from_tensor_slices((x, y[t])) for t in names},
        batch_size=16,
        shuffle=False,
    )
    learned = kb.LearnedAllocation(allocations, allocation_learning_rate=2e-2, seed=0)
    allocated = learned.search(batches, steps_per_epoch=2, epochs=2, verbose=0)
    record["allocation"] = allocated.history["loss"]
    record["allocation_plan"] = allocated.plan.to_config()
    if args.num_processes == 1:
        # Share routing and affinity branching take numpy arrays here (their
        # held-out and validation splits), which one process splits over its
        # devices; several processes would each feed their whole arrays.
        routing = kb.RoutingModelBuilder(
            (8,), [dense, dense], builder.tasks, optimizer=keras.optimizers.Adam(1e-2)
        )
        share_routing = kb.ShareRouting(
            routing,
            num_experts=2,
            warmup_epochs=0,
            steps_per_update=1,
            validation_split=0.25,
            seed=0,
        )
        routed = share_routing.search(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0)
        record["share_routing"] = routed.history["loss"]
        record["share_routing_plan"] = routed.plan.to_config()
        affinity = kb.AffinityBranching(builder, num_samples=16, budget=0.6, seed=0)
        branched = affinity.search(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
        record["affinity"] = branched.history["loss"]
        record["affinity_plan"] = branched.plan.to_config()
    plot_tree(found.plan, path=os.path.join(args.out_dir, f"plot_{args.process_id}.png"))
    return record


def _benchmark(args):
    import keras

    x, y, names, builder = _problem()
    import numpy as np

    x = np.tile(x, (128, 1))
    y = {t: np.tile(v, (128, 1)) for t, v in y.items()}
    keras.utils.set_random_seed(0)
    model = builder.build(builder.independent_tree())
    dataset = _dataset(x, y, batch_size=256)
    model.fit(dataset.take(2), epochs=1, shuffle=False, verbose=0)  # compiles
    started = time.perf_counter()
    model.fit(dataset, epochs=args.benchmark, shuffle=False, verbose=0)
    seconds = time.perf_counter() - started
    return {"examples_per_second": len(x) // 256 * 256 * args.benchmark / seconds}


def main(argv=None):
    args = _parse(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    distribution = _setup(args)
    setup_seconds = time.perf_counter() - started
    from keras_branching import distributed

    run = _benchmark if args.benchmark else _run
    reference = run(args) if args.reference else None  # before the distribution is set
    if distribution is not None:
        import keras

        keras.distribution.set_distribution(distribution)
    started = time.perf_counter()
    record = run(args)
    record["seconds"] = time.perf_counter() - started
    record["reference"] = reference
    record.update(
        num_processes=distributed.num_processes(),
        process_index=distributed.process_index(),
        is_chief=distributed.is_chief(),
        setup_seconds=setup_seconds,
        replicas=1 if distribution is None else len(distribution.device_mesh.devices.flatten()),
    )
    path = os.path.join(args.out_dir, f"process_{args.process_id}.json")
    with open(path, "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
    main()
