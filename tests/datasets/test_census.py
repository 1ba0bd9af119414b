import gzip
import os

import numpy as np
import pytest

from keras_branching.datasets.census import MMOE_TASK_PAIRS, census_income

REAL_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "census_kdd")
ROW = (
    "38, Private, 6, 36, 1st 2nd 3rd or 4th grade, 0, Not in universe, "
    "Married-civilian spouse present, Manufacturing-durable goods, Machine operators "
    "assmblrs & inspctrs, White, Mexican (Mexicano), Female, Not in universe, Not in "
    "universe, Full-time schedules, 0, 0, 0, Joint one under 65 & one 65+, Not in "
    "universe, Not in universe, Spouse of householder, Spouse of householder, 1032.38, "
    "?, ?, ?, Not in universe under 1 year old, ?, 4, Not in universe, Mexico, Mexico, "
    "Mexico, Foreign born- Not a citizen of U S , 0, Not in universe, 2, 12, 95, - 50000."
)


def _row(i):
    """Row `i` of a fixture whose targets are copies of kept categorical fields."""
    fields = [f.strip() for f in ROW[:-1].split(",")]
    fields[0] = str(20 + i)  # age
    fields[18] = str(100 * i)  # dividends
    rich, single, college = i % 4 == 0, i % 2 == 1, i % 3 == 0
    fields[41] = "50000+" if rich else "- 50000"
    fields[10] = "Black" if rich else "White"  # race mirrors income
    fields[7] = "Never married" if single else "Divorced"
    fields[12] = "Male" if single else "Female"  # sex mirrors marital
    fields[4] = "Bachelors degree(BA AB BS)" if college else "High school graduate"
    fields[6] = "College or university" if college else "Not in universe"  # enrolment
    return ", ".join(fields) + "."


def _has_column(x, target):
    return any(np.array_equal(x[:, j : j + 1], target) for j in range(x.shape[1]))


def _write(tmp_path, lines, name="census-income.test.gz"):
    data = ("\n".join(lines) + "\n").encode()
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return tmp_path


def test_parses_targets_and_features(tmp_path):
    _write(tmp_path, [_row(i) for i in range(40)])
    tasks = ("income", "marital", "education")
    splits = census_income(tmp_path, tasks=tasks, seed=3)
    assert set(splits) == {"train", "validation", "test"}
    assert {k: len(v[0]) for k, v in splits.items()} == {"train": 28, "validation": 4, "test": 8}
    for x, y in splits.values():
        assert x.dtype == np.float32 and np.all(np.isfinite(x))
        assert sorted(y) == sorted(tasks)
        for t in tasks:
            assert y[t].shape == (len(x), 1) and y[t].dtype == np.float32
        # Each target is the one-hot column of the field built to mirror it,
        # so targets and features come from the same rows.
        assert _has_column(x, y["income"]) and _has_column(x, y["marital"])
        assert _has_column(x, y["education"])
    x, y = splits["train"]
    assert set(np.unique(y["income"])) == {0.0, 1.0}
    # Numeric features are standardised on the training split (age first).
    np.testing.assert_allclose(x[:, 0].mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(x[:, 0].std(), 1.0, atol=1e-4)
    # Categorical fields become one-hot blocks (after the 7 numeric columns)
    # whose rows sum to the number of categorical fields kept.
    num_categorical = 42 - 4 - 7  # label, weight, 2 task fields, numerics
    np.testing.assert_allclose(x[:, 7:].sum(1), num_categorical)


def test_task_fields_are_not_features(tmp_path):
    lines = []
    for i in range(40):
        fields = _row(i)[:-1].split(", ")
        fields[12] = "Female"  # sex no longer mirrors marital status
        lines.append(", ".join(fields) + ".")
    _write(tmp_path, lines)
    x, y = census_income(tmp_path, tasks=("marital",), seed=0)["train"]
    assert not _has_column(x, y["marital"])  # the marital field itself was dropped
    x_income, _ = census_income(tmp_path, tasks=("income",), seed=0)["train"]
    assert _has_column(x_income, y["marital"])  # kept when it is not a task


def test_same_seed_same_split_other_seed_other_split(tmp_path):
    _write(tmp_path, [_row(i) for i in range(50)])
    a = census_income(tmp_path, seed=1)["test"][0]
    b = census_income(tmp_path, seed=1)["test"][0]
    c = census_income(tmp_path, seed=2)["test"][0]
    np.testing.assert_array_equal(a, b)
    assert a.shape == c.shape and not np.array_equal(a, c)


def test_plain_text_file_and_env_variable(tmp_path, monkeypatch):
    folder = tmp_path / "census_kdd"
    folder.mkdir()
    _write(folder, [_row(i) for i in range(20)], name="census-income.test")
    monkeypatch.setenv("KERAS_BRANCHING_DATA", str(tmp_path))
    x, y = census_income(seed=0)["train"]
    assert len(x) == 14 and sorted(y) == ["income", "marital"]


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="census-income.test.gz"):
        census_income(tmp_path)


def test_missing_env(monkeypatch):
    monkeypatch.delenv("KERAS_BRANCHING_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="KERAS_BRANCHING_DATA"):
        census_income()


def test_wrong_field_count_names_the_line(tmp_path):
    lines = [_row(i) for i in range(10)]
    lines[6] = "38, Private, 6."
    _write(tmp_path, lines)
    with pytest.raises(ValueError, match="line 7 .*expected 42 comma-separated fields"):
        census_income(tmp_path)


def test_bad_number_names_the_line(tmp_path):
    lines = [_row(i) for i in range(10)]
    lines[2] = "abc" + lines[2][2:]
    _write(tmp_path, lines)
    with pytest.raises(ValueError, match="line 3 .*expected a number in field 1"):
        census_income(tmp_path)


def test_bad_label_names_the_line(tmp_path):
    lines = [_row(i) for i in range(10)]
    lines[5] = lines[5].replace("- 50000.", "maybe.")
    _write(tmp_path, lines)
    with pytest.raises(ValueError, match="line 6 .*income label.*'maybe'"):
        census_income(tmp_path)


def test_missing_period_names_the_line(tmp_path):
    lines = [_row(i) for i in range(10)]
    lines[0] = lines[0][:-1]
    _write(tmp_path, lines)
    with pytest.raises(ValueError, match="line 1 .*ending in a period"):
        census_income(tmp_path)


def test_corrupt_gzip(tmp_path):
    (tmp_path / "census-income.test.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="Could not read"):
        census_income(tmp_path)


@pytest.mark.parametrize("tasks", [("income", "age"), (), "income", ("income", "income")])
def test_rejects_bad_tasks(tmp_path, tasks):
    with pytest.raises(ValueError, match="tasks="):
        census_income(tmp_path, tasks=tasks)


def test_rejects_bad_fractions(tmp_path):
    with pytest.raises(ValueError, match="validation_fraction=1.5"):
        census_income(tmp_path, validation_fraction=1.5)
    with pytest.raises(ValueError, match="< 1"):
        census_income(tmp_path, validation_fraction=0.5, test_fraction=0.5)


@pytest.mark.skipif(
    not os.path.isfile(os.path.join(REAL_DIR, "census-income.test.gz")),
    reason="the shared Census-Income file is not present",
)
def test_real_file():
    splits = census_income(REAL_DIR, seed=0)
    total = sum(len(x) for x, _ in splits.values())
    assert total == 99762
    y = np.concatenate([splits[k][1]["income"] for k in splits])
    m = np.concatenate([splits[k][1]["marital"] for k in splits])
    np.testing.assert_allclose(y.mean(), 0.0620, atol=5e-4)  # README base rates
    np.testing.assert_allclose(m.mean(), 0.4325, atol=5e-4)
    x = splits["train"][0]
    assert x.dtype == np.float32 and np.all(np.isfinite(x))
    # The second MMoE pair, on the same rows (the parsed file is cached in memory).
    pair = census_income(REAL_DIR, tasks=("education", "marital"), seed=0)
    e = np.concatenate([pair[k][1]["education"] for k in pair])
    np.testing.assert_allclose(e.mean(), 0.3349, atol=5e-4)
    np.testing.assert_array_equal(pair["test"][1]["marital"], splits["test"][1]["marital"])
    assert x.shape == (69834, 502) and pair["train"][0].shape == (69834, 485)


@pytest.mark.parametrize("pair", MMOE_TASK_PAIRS)
def test_each_mmoe_pair_on_the_same_split(tmp_path, pair):
    _write(tmp_path, [_row(i) for i in range(40)])
    splits = census_income(tmp_path, tasks=pair, seed=5)
    full = census_income(tmp_path, tasks=("income", "marital", "education"), seed=5)
    for name, (_, y) in splits.items():
        assert list(y) == list(pair)
        for task in pair:  # the same rows in every split, whichever pair
            np.testing.assert_array_equal(y[task], full[name][1][task])
    # The third task's field stays a feature.
    other = ({"income", "education"} - set(pair)).pop()
    x, _ = splits["train"]
    assert _has_column(x, full["train"][1][other])


def test_mmoe_pairs_constant():
    assert MMOE_TASK_PAIRS == (("income", "marital"), ("education", "marital"))
