"""MultiMNIST: two MNIST digits on one canvas, six tasks in two known groups."""

import gzip
import numbers
import os
import zlib

import numpy as np

DATA_ENV = "KERAS_BRANCHING_DATA"
FOLDER = "mnist"
#: The four standard IDX files (gzipped, or not) of the MNIST release.
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
#: Side of the canvas and offset of the lower right digit (in pixels).
CANVAS, OFFSET, DIGIT = 36, 8, 28
#: The six tasks, in the order of the two true groups.
GROUPS = (
    ("left_digit", "left_parity", "left_large"),
    ("right_digit", "right_parity", "right_large"),
)
TASKS = tuple(t for group in GROUPS for t in group)
NUM_CLASSES = {t: 10 if t.endswith("_digit") else 2 for t in TASKS}
_IMAGES_MAGIC, _LABELS_MAGIC = 0x00000803, 0x00000801


def _check_int(name, value, low, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"Expected `{name}` to be an int. Received: {name}={value!r}")
    if value < low:
        raise ValueError(f"Expected `{name}` >= {low}. Received: {name}={value!r}")
    return int(value)


def read_idx(path, magic):
    """Reads one IDX file of unsigned bytes (gzipped when its name ends in `.gz`).

    Args:
        path: the file.
        magic: the expected magic number: `0x00000803` for images (3
            dimensions), `0x00000801` for labels (1 dimension).

    Returns:
        A uint8 array of the shape the header gives.

    Raises:
        ValueError: naming `path`, if the file cannot be read (a corrupt or
            truncated gzip), has another magic number, or holds fewer or
            more bytes than its header announces.

    Example:

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte")
    >>> with open(path, "wb") as f:
    ...     _ = f.write(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]))
    >>> read_idx(path, 0x00000801)
    array([7, 2, 1], dtype=uint8)
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"Could not read the MNIST file {path}: {error}") from error
    num_dims = magic & 0xFF
    header = 4 + 4 * num_dims
    if len(data) < 4 or int.from_bytes(data[:4], "big") != magic:
        found = f"0x{int.from_bytes(data[:4], 'big'):08x}" if len(data) >= 4 else "no header"
        raise ValueError(
            f"The MNIST file {path} is not an IDX file of unsigned bytes with "
            f"{num_dims} dimension(s): expected the magic number 0x{magic:08x}. "
            f"Received: {found}"
        )
    if len(data) < header:
        raise ValueError(
            f"The MNIST file {path} is truncated: expected a {header}-byte header. "
            f"Received: {len(data)} bytes"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(num_dims))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        what = "truncated" if len(data) - header < expected else "longer than its header says"
        raise ValueError(
            f"The MNIST file {path} is {what}: its header announces shape {shape}, "
            f"{expected} bytes of data. Received: {len(data) - header} bytes"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _find_files(directory):
    """`{key: path}` of the four files in `directory` (`.gz` first), None when absent."""
    found = {}
    for key, name in FILES.items():
        found[key] = None
        for candidate in (name + ".gz", name):
            path = os.path.join(directory, candidate)
            if os.path.isfile(path):
                found[key] = path
                break
    return found


def _read_files(files):
    """`((x_train, y_train), (x_test, y_test))` from the four IDX files."""
    arrays = {}
    for key, path in files.items():
        arrays[key] = read_idx(path, _IMAGES_MAGIC if key.endswith("images") else _LABELS_MAGIC)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.shape[1:] != (DIGIT, DIGIT):
            raise ValueError(
                f"Expected {DIGIT}x{DIGIT} images in {files[f'{split}_images']}. "
                f"Received: images of shape {images.shape[1:]}"
            )
        if len(images) != len(labels):
            raise ValueError(
                f"Expected as many labels in {files[f'{split}_labels']} as images in "
                f"{files[f'{split}_images']}. Received: {len(labels)} labels and "
                f"{len(images)} images"
            )
        if labels.size and labels.max() > 9:
            raise ValueError(
                f"Expected digit labels 0 to 9 in {files[f'{split}_labels']}. "
                f"Received: {int(labels.max())}"
            )
    return (
        (arrays["train_images"], arrays["train_labels"]),
        (arrays["test_images"], arrays["test_labels"]),
    )


def _load(data_dir):
    """The MNIST arrays and where they came from."""
    if data_dir is not None:
        data_dir = os.fspath(data_dir)
        found = _find_files(data_dir)
        missing = [os.path.join(data_dir, FILES[k] + ".gz") for k, p in found.items() if not p]
        if missing:
            where = "the folder does not exist" if not os.path.isdir(data_dir) else "missing"
            raise FileNotFoundError(
                f"Expected the four MNIST IDX files in {data_dir!r}. Received: {missing} {where}"
            )
        return _read_files(found), data_dir
    root = os.environ.get(DATA_ENV)
    if root:
        directory = os.path.join(root, FOLDER)
        found = _find_files(directory)
        if all(found.values()):
            return _read_files(found), directory
        looked = f"{directory} (holding {sorted(k for k, p in found.items() if p)})"
    else:
        looked = f"${DATA_ENV}/{FOLDER} (the variable is not set)"
    try:
        import keras

        return keras.datasets.mnist.load_data(), "keras.datasets.mnist"
    except Exception as error:  # offline, or a failed download
        raise FileNotFoundError(
            f"Could not find the MNIST files {[n + '.gz' for n in FILES.values()]}. "
            f"Looked in: {looked}; pass `data_dir` or set {DATA_ENV}. "
            f"keras.datasets.mnist could not provide them either: "
            f"{type(error).__name__}: {error}"
        ) from error


def _compose(images, labels, left, right):
    """Canvases of the pairs `(left[i], right[i])` and their six targets."""
    canvas = np.zeros((len(left), CANVAS, CANVAS), np.uint8)
    canvas[:, :DIGIT, :DIGIT] = images[left]
    end = OFFSET + DIGIT
    canvas[:, OFFSET:end, OFFSET:end] = np.maximum(canvas[:, OFFSET:end, OFFSET:end], images[right])
    y = {}
    for side, index in (("left", left), ("right", right)):
        digit = labels[index].astype(np.int32)[:, None]
        y[f"{side}_digit"] = digit
        y[f"{side}_parity"] = digit % 2
        y[f"{side}_large"] = (digit >= 5).astype(np.int32)
    return (canvas.astype(np.float32) / 255.0)[..., None], y


def multi_mnist(data_dir=None, num_examples=None, seed=0, num_validation=10_000, num_test=None):
    """MultiMNIST: two digits on one canvas, six tasks in two known groups.

    Each example is a 36x36 canvas holding two MNIST digits: the "left"
    digit's 28x28 image in the upper left corner (rows and columns 0-27)
    and the "right" digit's image in the lower right corner (rows and
    columns 8-35), offset by 8 pixels in both directions; where they
    overlap the canvas keeps the larger pixel value (as in MultiMNIST,
    Sabour et al. 2017; Sener and Koltun 2018). Six tasks, in two groups
    whose members read the same digit:

    - `"left_digit"` (10 classes), `"left_parity"` (1 if the digit is odd)
      and `"left_large"` (1 if the digit is 5 or more);
    - `"right_digit"`, `"right_parity"` and `"right_large"`, the same for
      the right digit.

    Splits: `num_validation` of the 60,000 training images (a fixed-seed
    choice) make the validation split, the rest the training split; the
    10,000 test images the test split. Within a split, a fixed-seed
    permutation orders the images: example `i` puts image `order[i]` on the
    left and `order[i - 1]` on the right, so every image is used once on
    each side and never paired with itself. Everything depends only on
    `seed`: two calls give identical arrays. Capping with `num_examples`
    keeps a prefix of the full training split.

    Images come from, in order: `data_dir`, the folder holding the four
    standard IDX files (`train-images-idx3-ubyte.gz`, ...; gzipped or not;
    Fashion-MNIST's files have the same names and format); else
    `$KERAS_BRANCHING_DATA/mnist`; else `keras.datasets.mnist.load_data()`
    (which downloads once, for users who are online).

    Labels are int32 arrays of shape `(n, 1)`: use a `num_classes`-unit
    softmax head with `"sparse_categorical_crossentropy"` for the 10-class
    tasks and a 1-unit sigmoid head with `"binary_crossentropy"` for the
    2-class ones (`num_classes` in the result says which).

    Args:
        data_dir: folder holding the IDX files, or None.
        num_examples: cap on the number of training examples (default: all
            of them, 60,000 - `num_validation`), an int >= 1.
        seed: int >= 0, the seed of the validation choice and of the pairs.
        num_validation: number of training images held out for validation,
            >= 1 and fewer than the training images.
        num_test: cap on the number of test examples (default: all 10,000).

    Returns:
        A dict with keys `"train"`, `"validation"` and `"test"`, each an
        `(x, y)` pair (`x` float32 of shape `(n, 36, 36, 1)` in [0, 1], `y` a
        dict keyed by task of int32 labels of shape `(n, 1)`); `"tasks"`, the
        six task names; `"groups"`, the true grouping (a list of two lists
        of task names); `"num_classes"`, a dict keyed by task (10 or 2);
        `"image_shape"`, `(36, 36, 1)`; and `"source"`, where the images were
        read from.

    Raises:
        FileNotFoundError: when the files are in none of the places above,
            naming the files looked for.
        ValueError: for a file that is not a readable IDX file (naming it),
            or bad arguments.
        TypeError: for arguments that are not ints.

    Example:

    >>> data = multi_mnist("../shared/data/mnist", num_examples=100)  # doctest: +SKIP
    >>> x, y = data["train"]  # doctest: +SKIP
    >>> x.shape, sorted(y)[:2], data["groups"][0]  # doctest: +SKIP
    ((100, 36, 36, 1), ['left_digit', 'left_large'], ['left_digit', 'left_parity', 'left_large'])
    """
    num_examples = _check_int("num_examples", num_examples, 1, allow_none=True)
    seed = _check_int("seed", seed, 0)
    num_validation = _check_int("num_validation", num_validation, 1)
    num_test = _check_int("num_test", num_test, 1, allow_none=True)

    ((x_train, y_train), (x_test, y_test)), source = _load(data_dir)
    if num_validation >= len(x_train):
        raise ValueError(
            f"Expected `num_validation` < the {len(x_train)} training images of {source}. "
            f"Received: num_validation={num_validation}"
        )
    rng = np.random.default_rng(seed)
    held_out = rng.permutation(len(x_train))
    pools = {
        "train": (x_train, y_train, np.sort(held_out[num_validation:]), num_examples),
        "validation": (x_train, y_train, np.sort(held_out[:num_validation]), None),
        "test": (x_test, y_test, np.arange(len(x_test)), num_test),
    }
    result = {}
    for split, (images, labels, pool, cap) in pools.items():
        order = pool[rng.permutation(len(pool))]
        left, right = order, np.roll(order, 1)
        if cap is not None:
            left, right = left[:cap], right[:cap]
        result[split] = _compose(images, labels, left, right)
    result.update(
        tasks=list(TASKS),
        groups=[list(g) for g in GROUPS],
        num_classes=dict(NUM_CLASSES),
        image_shape=(CANVAS, CANVAS, 1),
        source=source,
    )
    return result
