"""A keras-tuner search over branching trees, spread over processes or machines.

keras-tuner's distributed mode: one chief serves the oracle (it decides the
trials and trains none), every worker asks it for a trial, trains it and
reports the score, until the oracle has handed out `--max-trials` trials.
Run this same script everywhere, with the same `--directory` (a shared file
system for several machines) and these variables set:

    KERASTUNER_ORACLE_IP=<chief address> KERASTUNER_ORACLE_PORT=<free port>
    KERASTUNER_TUNER_ID=chief          # on one process
    KERASTUNER_TUNER_ID=tuner0, tuner1 # one id per worker

The chief prints the best tree when every worker is done; so does
`--report`, from any process, at any time, reading the directory. The chief
runs a `TrialWatchdog`: a trial whose worker died is ended after
`--trial-timeout` seconds, so the search still ends. `--runs-dir` writes one
empty file per trial run (`<trial>.<worker>.<pid>.begin` and `.end`), an
audit of who ran what. See docs/distributed_trials.md.
"""

import argparse
import json
import os
import sys

import keras
import keras_tuner

from keras_branching.builder import BranchedModelBuilder
from keras_branching.datasets.synthetic import synthetic_tasks
from keras_branching.task import Task
from keras_branching.tuning import BranchingHyperModel, watch_trials


class AuditedRandomSearch(keras_tuner.RandomSearch):
    """`RandomSearch` that marks each trial run with files in `runs_dir`."""

    def __init__(self, *args, runs_dir=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.runs_dir = runs_dir

    def _mark(self, trial, stage):
        if self.runs_dir:
            name = f"{trial.trial_id}.{self.tuner_id}.{os.getpid()}.{stage}"
            open(os.path.join(self.runs_dir, name), "w").close()

    def run_trial(self, trial, *args, **kwargs):
        self._mark(trial, "begin")
        results = super().run_trial(trial, *args, **kwargs)
        self._mark(trial, "end")
        return results


def make_tuner(args, tasks):
    builder = BranchedModelBuilder(
        inputs=(16,),
        blocks=[lambda: keras.layers.Dense(8, activation="relu")] * 2,
        tasks=[Task(n, head=lambda: keras.layers.Dense(1), loss="mse") for n in tasks],
    )
    hypermodel = BranchingHyperModel(builder)
    tuner = AuditedRandomSearch(
        hypermodel,
        objective="val_loss",
        max_trials=args.max_trials,
        seed=0,
        # Never True: a process starting late would delete the others' state.
        overwrite=False,
        directory=args.directory,
        project_name=args.project_name,
        runs_dir=args.runs_dir,
    )
    return tuner, hypermodel


def report(tuner, hypermodel):
    """Prints the best tree, then one JSON line: best trial, its tree, every status."""
    oracle = tuner.oracle
    statuses = {trial_id: trial.status for trial_id, trial in sorted(oracle.trials.items())}
    best = [t for t in oracle.get_best_trials(1) if t.status == "COMPLETED"]
    if best:
        tree = hypermodel.tree(best[0].hyperparameters)
        print(f"Best trial {best[0].trial_id} (val_loss {best[0].score:.4f}):\n{tree!r}")
        summary = {
            "best_trial": best[0].trial_id,
            "score": best[0].score,
            "tree": tree.to_config(),
            "statuses": statuses,
        }
    else:
        print("No completed trial yet.")
        summary = {"best_trial": None, "score": None, "tree": None, "statuses": statuses}
    print(json.dumps(summary))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--directory", required=True, help="the tuner's directory (shared)")
    parser.add_argument("--project-name", default="trees")
    parser.add_argument("--max-trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--trial-timeout",
        type=float,
        default=600.0,
        help="seconds after which the chief ends a trial whose worker sent no result",
    )
    parser.add_argument("--runs-dir", default=None, help="write one file per trial run here")
    parser.add_argument("--report", action="store_true", help="print the best tree and exit")
    args = parser.parse_args(argv)

    x, y, _ = synthetic_tasks(2, 2, 256, input_dim=16, seed=0)
    tuner, hypermodel = make_tuner(args, sorted(y))
    if args.report:
        report(tuner, hypermodel)
        return
    watchdog = watch_trials(tuner, trial_timeout=args.trial_timeout)  # None on workers
    # On the chief, `search` serves the oracle until every worker is done.
    tuner.search(x, y, validation_split=0.25, epochs=args.epochs, batch_size=32, verbose=0)
    if watchdog is not None:
        watchdog.stop()
        report(tuner, hypermodel)


if __name__ == "__main__":
    sys.exit(main())
