import json
import os
import subprocess
import sys

import pytest

from keras_branching import BranchingTree
from keras_branching.cli import main

TINY = ["--examples", "200", "--epochs", "2", "--groups", "2", "--input-dim", "8", "--width", "8"]


def test_demo_trains_compares_and_exports(tmp_path, capsys):
    assert main(["demo", "--output-dir", str(tmp_path), *TINY]) == 0
    out = capsys.readouterr().out
    for expected in ("shared", "independent", "true grouping", "parameters", "Exported"):
        assert expected in out
    # The two search methods ran, and each compared its tree with the true one.
    assert "Task affinity" in out and "Chosen tree" in out
    assert "Learning to branch: a supernet of widths [1, 2, 2]" in out
    assert out.count("the true grouping") >= 2
    # Random trees of the true grouping's size, and the verdict per search.
    assert "random 3" in out and "random trees of its size" in out
    assert "true groups" in out
    assert "largest difference from predict: 0.00e+00" in out
    assert (tmp_path / "saved_model" / "saved_model.pb").exists()
    tree = BranchingTree.from_json((tmp_path / "tree.json").read_text())
    assert tree.tasks == ("g0_t0", "g0_t1", "g1_t0", "g1_t1")


def test_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--epochs", "0"])
    assert "argument --epochs: expected an integer >= 1. Received: '0'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--blocks", "1"])
    assert "argument --blocks: expected an integer >= 2. Received: '1'" in capsys.readouterr().err


# After the import, device settings are still allowed (no op has run) and the
# first op prints nothing either.
_AFTER_IMPORT = """
import keras_branching
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
print(len(tf.config.list_logical_devices("CPU")), float(tf.reduce_sum(tf.ones(3))))
"""


def test_import_prints_no_tensorflow_start_up_lines_and_runs_no_op():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-c", _AFTER_IMPORT], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.split() == ["2", "3.0"]


def test_module_entry_point_shows_help():
    result = subprocess.run(
        [sys.executable, "-m", "keras_branching", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "demo" in result.stdout


def test_tree_json_is_plain_json(tmp_path):
    main(["demo", "--output-dir", str(tmp_path), *TINY, "--seed", "1", "--skip-search"])
    assert set(json.loads((tmp_path / "tree.json").read_text())) == {"tasks", "partitions"}
