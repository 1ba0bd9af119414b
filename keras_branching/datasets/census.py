"""UCI Census-Income (KDD) with the multi-task setups of MMoE (Ma et al., 2018)."""

import gzip
import numbers
import os

import numpy as np

DATA_ENV = "KERAS_BRANCHING_DATA"
FOLDER = "census_kdd"
FILES = ("census-income.test.gz", "census-income.test")
NUM_FIELDS = 42

# Field positions (0-based) in a row of the UCI file (see census-income.names).
AGE, EDUCATION, WAGE, MARITAL, GAINS, LOSSES, DIVIDENDS = 0, 4, 5, 7, 16, 17, 18
INSTANCE_WEIGHT, NUM_PERSONS, WEEKS_WORKED, LABEL = 24, 30, 39, 41
NUMERIC = (AGE, WAGE, GAINS, LOSSES, DIVIDENDS, NUM_PERSONS, WEEKS_WORKED)
# Heavy-tailed amounts in dollars: log1p before standardising.
LOG_SCALED = (WAGE, GAINS, LOSSES, DIVIDENDS)
COLLEGE = frozenset(
    {
        "Some college but no degree",
        "Associates degree-occup /vocational",
        "Associates degree-academic program",
        "Bachelors degree(BA AB BS)",
        "Masters degree(MA MS MEng MEd MSW MBA)",
        "Prof school degree (MD DDS DVM LLB JD)",
        "Doctorate degree(PhD EdD)",
    }
)
LABELS = {"- 50000": 0, "50000+": 1}
TASKS = ("income", "marital", "education")
#: The two multi-task setups of MMoE (Ma et al. 2018): pass one as `tasks`.
MMOE_TASK_PAIRS = (("income", "marital"), ("education", "marital"))
# The field each task is read from; it is removed from the features.
TASK_FIELDS = {"income": LABEL, "marital": MARITAL, "education": EDUCATION}

_CACHE = {}


def _find_file(data_dir):
    if data_dir is None:
        root = os.environ.get(DATA_ENV)
        if not root:
            raise FileNotFoundError(
                "No `data_dir` given and the environment variable "
                f"{DATA_ENV} is not set. Pass data_dir='.../census_kdd' (the folder "
                f"holding {FILES[0]}), or set {DATA_ENV} to a folder containing "
                f"{FOLDER}/."
            )
        data_dir = os.path.join(root, FOLDER)
    data_dir = os.fspath(data_dir)
    for name in FILES:
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            return path
    if os.path.isdir(data_dir):
        found = f"a folder holding {sorted(os.listdir(data_dir))}"
    else:
        found = "no such folder"
    raise FileNotFoundError(
        f"Expected {FILES[0]} (or the uncompressed {FILES[1]}) in {data_dir!r}. Received: {found}"
    )


def _parse(path):
    """The file, column by column; cached per file (path, time and size).

    Returns a tuple `(rows, numeric, codes)`: the number of rows; a float64
    array of the numeric fields; for every field a pair `(values, codes)`
    of its distinct strings and each row's index into them.
    """
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_mtime_ns, stat.st_size)
    if key in _CACHE:
        return _CACHE[key]
    opener = gzip.open if path.endswith(".gz") else open
    rows = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                line = line.strip()
                if not line:
                    continue
                if not line.endswith("."):
                    raise ValueError(
                        f"Malformed line {number} of {path}: expected a row ending in a "
                        f"period. Received: {line[:80]!r}"
                    )
                fields = [p.strip() for p in line[:-1].split(",")]
                if len(fields) != NUM_FIELDS:
                    raise ValueError(
                        f"Malformed line {number} of {path}: expected {NUM_FIELDS} "
                        f"comma-separated fields. Received {len(fields)}: {line[:80]!r}"
                    )
                if fields[LABEL] not in LABELS:
                    raise ValueError(
                        f"Malformed line {number} of {path}: expected the income label "
                        f"'- 50000.' or '50000+.'. Received: {fields[LABEL]!r}"
                    )
                for i in NUMERIC:
                    try:
                        float(fields[i])
                    except ValueError:
                        raise ValueError(
                            f"Malformed line {number} of {path}: expected a number in "
                            f"field {i + 1}. Received: {fields[i]!r}"
                        ) from None
                rows.append(fields)
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise ValueError(f"Could not read {path}: {error}") from error
    if not rows:
        raise ValueError(f"Expected rows in {path}. Received an empty file")
    table = np.asarray(rows, dtype=object)
    numeric = table[:, list(NUMERIC)].astype(np.float64)
    codes = [np.unique(table[:, i].astype(str), return_inverse=True) for i in range(NUM_FIELDS)]
    _CACHE.clear()  # keep one file at most
    _CACHE[key] = (len(rows), numeric, codes)
    return _CACHE[key]


def _targets(codes, task):
    values, index = codes[TASK_FIELDS[task]]
    if task == "income":
        positive = [v == "50000+" for v in values]
    elif task == "marital":
        positive = [v == "Never married" for v in values]
    else:
        positive = [v in COLLEGE for v in values]
    return np.asarray(positive, dtype=np.float32)[index][:, None]


def _check_fraction(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"Expected `{name}` in (0, 1). Received: {name}={value!r}")
    return float(value)


def census_income(
    data_dir=None,
    tasks=("income", "marital"),
    seed=0,
    validation_fraction=0.1,
    test_fraction=0.2,
):
    """Census-Income (KDD) as binary tasks, split into train, validation and test.

    Reads the UCI file `census-income.test.gz` (or the uncompressed
    `census-income.test`) of the Census-Income (KDD) data set, 99,762
    rows of 42 fields. The official training file is not used: results on
    this split of the official *test* file are not comparable with
    published numbers (MMoE and later work train on the 199,523 rows of
    `census-income.data`).

    Tasks:
        - `"income"`: income over 50K (the label field is `50000+.`);
          6.2% positive.
        - `"marital"`: marital status is `Never married`; 43.3% positive.
        - `"education"`: education at least college (some college, an
          associates, bachelors, masters, professional or doctoral degree).

    The two task pairs of MMoE (Ma et al. 2018), also listed in
    `MMOE_TASK_PAIRS`: `census_income(data_dir, tasks=("income", "marital"))`
    (the default) and `census_income(data_dir, tasks=("education",
    "marital"))`. The metric of both is per-task AUC. The same `seed` gives
    the same rows in each split for both pairs; only the dropped feature
    fields differ.

    Features: every field except the instance weight (a survey sampling
    weight, not a feature), the income label and the fields of the chosen
    tasks (so `"marital"` removes the marital status). The 7 numeric fields
    (age, wage per hour, capital gains, capital losses, dividends, persons
    worked for employer, weeks worked) are standardised with the training
    split's mean and standard deviation, the four dollar amounts after
    `log1p`. The other fields, the coded ones included (industry and
    occupation recodes, year, ...), are one-hot encoded over the values
    seen in the training split; a value seen only in validation or test
    encodes as all zeros. Note that the detailed household field says
    "never married" for some children, as in the MMoE setup.

    The split is a fixed-seed random permutation of the rows: the first
    `test_fraction` of it is the test set, the next `validation_fraction`
    the validation set, the rest the training set. Parsed rows are cached
    in memory, so a second call with another seed is fast.

    Args:
        data_dir: the folder holding the file (e.g. `../shared/data/census_kdd`).
            Default: `$KERAS_BRANCHING_DATA/census_kdd`.
        tasks: task names among `"income"`, `"marital"`, `"education"`.
        seed: integer seed of the split.
        validation_fraction: share of rows in the validation split, in (0, 1).
        test_fraction: share of rows in the test split, in (0, 1).

    Returns:
        A dict with keys `"train"`, `"validation"` and `"test"`, each an
        `(x, y)` pair: `x` a float32 array `(rows, features)`, `y` a dict
        keyed by task of float32 0/1 arrays of shape `(rows, 1)`.

    Raises:
        FileNotFoundError: if the file is not found.
        ValueError: for unknown tasks, bad fractions, or a malformed file
            (the message names the line).

    Example:

    >>> splits = census_income("../shared/data/census_kdd")  # doctest: +SKIP
    >>> x, y = splits["train"]  # doctest: +SKIP
    >>> sorted(y)  # doctest: +SKIP
    ['income', 'marital']
    """
    if isinstance(tasks, str) or not isinstance(tasks, (list, tuple)) or not tasks:
        raise ValueError(
            f"Expected `tasks` to be a non-empty list of task names among {list(TASKS)}. "
            f"Received: tasks={tasks!r}"
        )
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or len(set(tasks)) != len(tasks):
        raise ValueError(
            f"Expected `tasks` to be distinct names among {list(TASKS)}. Received: tasks={tasks!r}"
        )
    validation_fraction = _check_fraction("validation_fraction", validation_fraction)
    test_fraction = _check_fraction("test_fraction", test_fraction)
    if validation_fraction + test_fraction >= 1:
        raise ValueError(
            "Expected validation_fraction + test_fraction < 1. Received: "
            f"validation_fraction={validation_fraction}, test_fraction={test_fraction}"
        )
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"Expected `seed` to be an int. Received: seed={seed!r}")

    n, numeric, codes = _parse(_find_file(data_dir))
    order = np.random.default_rng(seed).permutation(n)
    num_test = int(round(test_fraction * n))
    num_validation = int(round(validation_fraction * n))
    parts = {
        "test": order[:num_test],
        "validation": order[num_test : num_test + num_validation],
        "train": order[num_test + num_validation :],
    }
    if any(len(p) == 0 for p in parts.values()):
        raise ValueError(
            f"The file has {n} rows, too few to split into non-empty train, validation "
            f"and test parts with validation_fraction={validation_fraction} and "
            f"test_fraction={test_fraction}"
        )

    dropped = {INSTANCE_WEIGHT, LABEL} | {TASK_FIELDS[t] for t in tasks}
    train = parts["train"]
    columns = []
    for j, i in enumerate(NUMERIC):
        if i in dropped:
            continue
        values = numeric[:, j]
        if i in LOG_SCALED:
            values = np.log1p(np.maximum(values, 0.0))
        mean, std = values[train].mean(), values[train].std()
        columns.append(((values - mean) / (std if std > 0 else 1.0))[:, None])
    for i in range(NUM_FIELDS):
        if i in dropped or i in NUMERIC:
            continue
        values, index = codes[i]
        seen = np.unique(index[train])  # the training split's vocabulary
        column = np.full(len(values), -1)
        column[seen] = np.arange(len(seen))
        column = column[index]
        known = np.flatnonzero(column >= 0)
        onehot = np.zeros((n, len(seen)), dtype=np.float32)
        onehot[known, column[known]] = 1.0
        columns.append(onehot)
    x = np.concatenate(columns, axis=1).astype(np.float32)
    y = {t: _targets(codes, t) for t in tasks}
    return {name: (x[p], {t: y[t][p] for t in tasks}) for name, p in parts.items()}
