"""Throughput of one tree model on 1 process vs 2 processes (JAX `keras.distribution`, CPU).

Starts `tests/distributed_jax/worker.py --benchmark EPOCHS` in fresh JAX
processes: once as a single process on one CPU device, once as two
processes on 127.0.0.1 joined by `keras.distribution.initialize` (gloo
CPU collectives) and trained under `keras.distribution.DataParallel`. The
model is the independent tree of 4 tasks over three Dense(8) blocks, on
8,192 examples in global batches of 256 (each process gets 128 of each
batch). It prints the examples per second of each run (after one
compiling `fit` of 2 steps) and the speed-up. On one machine the two
processes share its cores, so expect little or no speed-up: the figure
shows the cost of the collectives, not a cluster's scaling.

    KERAS_BACKEND=jax python benchmarks/distributed_throughput.py [--epochs 5]
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "distributed_jax", "worker.py")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(num_processes, epochs, timeout):
    """Examples per second of process 0 of a run of `num_processes` processes."""
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as out:
        port = str(_free_port())
        processes = [
            subprocess.Popen(
                [sys.executable, WORKER, out, "--benchmark", str(epochs)]
                + ["--num-processes", str(num_processes), "--process-id", str(i), "--port", port],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for i in range(num_processes)
        ]
        for process in processes:
            try:
                _, stderr = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                for p in processes:
                    p.kill()
                raise SystemExit(
                    f"{num_processes} process(es): timed out after {timeout}s"
                ) from None
            if process.returncode:
                raise SystemExit(f"{num_processes} process(es) failed:\n{stderr[-3000:]}")
        with open(os.path.join(out, "process_0.json")) as f:
            return json.load(f)["examples_per_second"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs (%(default)s)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per run (%(default)s)")
    args = parser.parse_args()
    rates = {n: _run(n, args.epochs, args.timeout) for n in (1, 2)}
    print(f"{'processes':>9}  {'examples/s':>10}  {'speed-up':>8}")
    for n, rate in rates.items():
        print(f"{n:>9}  {rate:>10,.0f}  {rate / rates[1]:>7.2f}x")
    print(f"({os.cpu_count()} CPU cores, {args.epochs} epochs of 8,192 examples, batch 256)")


if __name__ == "__main__":
    main()
