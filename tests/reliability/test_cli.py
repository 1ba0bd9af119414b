"""The `keras-branching` command: every numeric option is checked by argparse.

A bad value exits with status 2 and a one-line error naming the option
and the value, before any model is built (no traceback).
"""

import re
import subprocess
import sys

import pytest

from keras_branching.cli import _parser, main

OPTIONS = {
    # option: its lowest accepted value
    "--epochs": 1,
    "--examples": 20,
    "--groups": 1,
    "--tasks-per-group": 1,
    "--input-dim": 2,
    "--blocks": 2,
    "--width": 1,
    "--batch-size": 1,
    "--seed": 0,
    "--sines": 0,
    "--random-trees": 0,
}
CASES = [(option, str(low - 1)) for option, low in OPTIONS.items()]
CASES += [(option, "-5") for option in OPTIONS]
CASES += [(option, text) for option in ("--epochs", "--batch-size") for text in ("abc", "2.5", "")]
CASES += [("--width", "1e3"), ("--seed", "nan"), ("--examples", "inf"), ("--input-dim", "0x10")]


def _error_line(capsys):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("option, value", CASES)
def test_bad_numeric_option_exits_2_with_one_line(capsys, option, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", option, value])
    assert exit_info.value.code == 2
    line = _error_line(capsys)
    assert line.startswith("keras-branching demo: error: argument " + option + ": ")
    assert re.search(r"expected an integer >= -?\d+\. Received: " + re.escape(repr(value)), line)


REAL_CASES = [
    ("--relatedness", "1.5", "a number in [0, 1]"),
    ("--relatedness", "-0.1", "a number in [0, 1]"),
    ("--relatedness", "nan", "a number in [0, 1]"),
    ("--relatedness", "high", "a number in [0, 1]"),
    ("--learning-rate", "0", "a number > 0"),
    ("--learning-rate", "-0.001", "a number > 0"),
    ("--learning-rate", "inf", "a number > 0"),
    ("--learning-rate", "nan", "a number > 0"),
]


@pytest.mark.parametrize("option, value, expected", REAL_CASES)
def test_bad_real_option_exits_2_with_one_line(capsys, option, value, expected):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", option, value])
    assert exit_info.value.code == 2
    line = _error_line(capsys)
    assert line.endswith(f"argument {option}: expected {expected}. Received: {value!r}")


def test_batch_size_zero_is_rejected_not_replaced_by_the_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--batch-size", "0"])
    assert exit_info.value.code == 2
    assert "argument --batch-size: expected an integer >= 1. Received: '0'" in _error_line(capsys)


def test_input_dim_below_twice_the_groups(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--groups", "4", "--input-dim", "7"])
    assert exit_info.value.code == 2
    line = _error_line(capsys)
    assert "argument --input-dim: expected >= 2 x --groups = 8" in line and "Received: 7" in line


def test_missing_value_and_unknown_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--epochs"])
    assert exit_info.value.code == 2
    assert "argument --epochs: expected one argument" in _error_line(capsys)
    with pytest.raises(SystemExit) as exit_info:
        main(["train"])
    assert exit_info.value.code == 2
    assert "'train'" in _error_line(capsys)


def test_valid_values_parse():
    args = _parser().parse_args(
        ["demo", "--epochs", "3", "--batch-size", "1", "--seed", "0", "--input-dim", "+8"]
    )
    assert (args.epochs, args.batch_size, args.seed, args.input_dim) == (3, 1, 0, 8)


def test_command_line_exit_code_without_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "keras_branching", "demo", "--input-dim", "0"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "argument --input-dim: expected an integer >= 2. Received: '0'" in result.stderr
