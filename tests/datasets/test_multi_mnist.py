import gzip
import os

import keras
import numpy as np
import pytest

from keras_branching import BranchedModelBuilder, Task
from keras_branching.datasets import mnist as mnist_module
from keras_branching.datasets import multi_mnist

HERE = os.path.dirname(__file__)
REAL = os.path.join(os.environ.get("KERAS_BRANCHING_DATA", ""), "mnist")
if not os.path.isfile(os.path.join(REAL, "train-images-idx3-ubyte.gz")):
    REAL = os.path.join(HERE, "..", "..", "..", "shared", "data", "mnist")
HAS_REAL = os.path.isfile(os.path.join(REAL, "train-images-idx3-ubyte.gz"))
TASKS = ["left_digit", "left_parity", "left_large", "right_digit", "right_parity", "right_large"]


def idx_bytes(array):
    """An IDX file of unsigned bytes holding `array`."""
    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def digits(count, start=0):
    """`count` 28x28 images whose corners tell them apart, and their labels.

    Image `k` holds `k + 1 + start` at (0, 0) and at (27, 27) (so the canvas
    corners name the left and the right image), 50 at (14, 14) and 200 at
    (6, 6) (where the right image lands on the left one's (14, 14)).
    """
    images = np.zeros((count, 28, 28), np.uint8)
    index = np.arange(count) + 1 + start
    images[:, 0, 0] = images[:, 27, 27] = index
    images[:, 14, 14], images[:, 6, 6] = 50, 200
    return images, (index * 7) % 10


def write_mnist(directory, num_train=40, num_test=12, compress=True):
    """The four IDX files of a tiny MNIST in `directory`; returns the arrays."""
    directory.mkdir(parents=True, exist_ok=True)
    train, test = digits(num_train), digits(num_test, start=100)
    contents = {
        "train-images-idx3-ubyte": train[0],
        "train-labels-idx1-ubyte": train[1],
        "t10k-images-idx3-ubyte": test[0],
        "t10k-labels-idx1-ubyte": test[1],
    }
    for name, array in contents.items():
        if compress:
            with gzip.open(directory / (name + ".gz"), "wb") as f:
                f.write(idx_bytes(array))
        else:
            (directory / name).write_bytes(idx_bytes(array))
    return train, test


def test_splits_shapes_tasks_and_groups(tmp_path):
    write_mnist(tmp_path)
    data = multi_mnist(tmp_path, num_validation=10)
    assert {k: len(data[k][0]) for k in ("train", "validation", "test")} == {
        "train": 30,
        "validation": 10,
        "test": 12,
    }
    assert data["tasks"] == TASKS
    assert data["groups"] == [TASKS[:3], TASKS[3:]]
    assert data["num_classes"] == {t: 10 if t.endswith("digit") else 2 for t in TASKS}
    assert data["image_shape"] == (36, 36, 1) and data["source"] == str(tmp_path)
    for split in ("train", "validation", "test"):
        x, y = data[split]
        assert x.shape == (len(x), 36, 36, 1) and x.dtype == np.float32
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert list(y) == TASKS
        for task, labels in y.items():
            assert labels.shape == (len(x), 1) and labels.dtype == np.int32, task
            assert labels.min() >= 0 and labels.max() < data["num_classes"][task]


def _identify(x):
    """Fixture indices (value - 1) of the left and right image of each canvas."""
    pixels = np.round(x[..., 0] * 255).astype(int)
    return pixels[:, 0, 0] - 1, pixels[:, 35, 35] - 1


def test_canvas_places_and_overlays_the_two_digits(tmp_path):
    (images, labels), (test_images, test_labels) = write_mnist(tmp_path)
    data = multi_mnist(tmp_path, num_validation=10, seed=4)
    x, y = data["test"]
    left, right = _identify(x)
    left, right = left - 100, right - 100  # the test images start at 101
    pixels = np.round(x[..., 0] * 255).astype(int)
    # Left digit in rows/columns 0-27, right digit offset by 8; maximum where they overlap.
    assert np.all(pixels[:, 14, 14] == 200) and np.all(pixels[:, 6, 6] == 200)
    assert np.all(pixels[:, 22, 22] == 50)  # the right digit's (14, 14)
    assert np.all(pixels[:, 27, 27] == test_images[left, 27, 27])
    # Every test image is used once on each side, never paired with itself.
    assert sorted(left) == sorted(right) == list(range(12))
    assert np.all(left != right)
    for side, index in (("left", left), ("right", right)):
        digit = test_labels[index]
        np.testing.assert_array_equal(y[f"{side}_digit"][:, 0], digit)
        np.testing.assert_array_equal(y[f"{side}_parity"][:, 0], digit % 2)
        np.testing.assert_array_equal(y[f"{side}_large"][:, 0], digit >= 5)
    # Train and validation split the 40 training images between them.
    train_left, _ = _identify(data["train"][0])
    validation_left, _ = _identify(data["validation"][0])
    assert sorted([*train_left, *validation_left]) == list(range(40))
    np.testing.assert_array_equal(data["train"][1]["left_digit"][:, 0], labels[train_left])


def test_deterministic_given_seed_and_capped_prefix(tmp_path):
    write_mnist(tmp_path)
    a = multi_mnist(tmp_path, num_validation=10, seed=1)
    b = multi_mnist(tmp_path, num_validation=10, seed=1)
    c = multi_mnist(tmp_path, num_validation=10, seed=2)
    for split in ("train", "validation", "test"):
        np.testing.assert_array_equal(a[split][0], b[split][0])
        for task in TASKS:
            np.testing.assert_array_equal(a[split][1][task], b[split][1][task])
    assert not np.array_equal(a["train"][0], c["train"][0])
    capped = multi_mnist(tmp_path, num_examples=7, num_validation=10, num_test=5, seed=1)
    assert len(capped["train"][0]) == 7 and len(capped["test"][0]) == 5
    np.testing.assert_array_equal(capped["train"][0], a["train"][0][:7])
    np.testing.assert_array_equal(capped["validation"][0], a["validation"][0])
    # A cap above the split's size keeps the whole split.
    assert len(multi_mnist(tmp_path, num_examples=10**6, num_validation=10)["train"][0]) == 30


def test_environment_variable_and_uncompressed_files(tmp_path, monkeypatch):
    write_mnist(tmp_path / "mnist", compress=False)
    monkeypatch.setenv("KERAS_BRANCHING_DATA", str(tmp_path))
    data = multi_mnist(num_validation=5)
    assert len(data["train"][0]) == 35
    assert data["source"] == os.path.join(str(tmp_path), "mnist")


def test_falls_back_to_keras_datasets(tmp_path, monkeypatch):
    monkeypatch.delenv("KERAS_BRANCHING_DATA", raising=False)
    arrays = (digits(20), digits(6, start=100))
    monkeypatch.setattr(keras.datasets.mnist, "load_data", lambda: arrays)
    data = multi_mnist(num_validation=4)
    assert data["source"] == "keras.datasets.mnist"
    assert len(data["train"][0]) == 16 and len(data["test"][0]) == 6


def test_offline_without_files_names_what_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_BRANCHING_DATA", str(tmp_path))

    def offline():
        raise ConnectionError("no network")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte.gz.*no network"):
        multi_mnist()


def test_missing_files_in_data_dir_are_named(tmp_path):
    write_mnist(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.gz"):
        multi_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        multi_mnist(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_examples": 0}, ValueError, r"num_examples=0"),
        ({"num_examples": 2.5}, TypeError, r"num_examples=2.5"),
        ({"seed": -1}, ValueError, r"seed=-1"),
        ({"seed": None}, TypeError, r"seed=None"),
        ({"num_validation": 0}, ValueError, r"num_validation=0"),
        ({"num_validation": 40}, ValueError, r"num_validation=40"),
        ({"num_test": True}, TypeError, r"num_test=True"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, error, match):
    write_mnist(tmp_path)
    with pytest.raises(error, match=match):
        multi_mnist(tmp_path, **kwargs)


def test_labels_train_with_the_documented_losses(tmp_path):
    write_mnist(tmp_path, num_train=64)
    data = multi_mnist(tmp_path, num_validation=16)

    def head(task):
        classes = data["num_classes"][task]
        if classes == 2:
            return Task(task, head=lambda: keras.layers.Dense(1, "sigmoid"), loss="bce")
        return Task(
            task,
            head=lambda: keras.layers.Dense(classes, "softmax"),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )

    builder = BranchedModelBuilder(
        inputs=data["image_shape"],
        blocks=[keras.layers.Flatten, lambda: keras.layers.Dense(8, "relu")],
        tasks=[head(t) for t in data["tasks"]],
        seed=0,
    )
    model = builder.build(builder.shared_tree())
    history = model.fit(*data["train"], validation_data=data["validation"], epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert np.isfinite(history.history["val_loss"][0])


@pytest.mark.skipif(not HAS_REAL, reason="the shared MNIST files are not present")
def test_real_mnist():
    data = multi_mnist(REAL, num_examples=500, num_test=500, seed=0)
    assert len(data["train"][0]) == 500 and len(data["validation"][0]) == 10_000
    assert len(data["test"][0]) == 500
    y = data["validation"][1]
    counts = np.bincount(y["left_digit"][:, 0], minlength=10)
    assert counts.min() > 800  # every class, roughly balanced
    np.testing.assert_array_equal(y["left_parity"], y["left_digit"] % 2)
    np.testing.assert_array_equal(y["right_large"], (y["right_digit"] >= 5).astype(np.int32))
    # The validation images are a permutation of each other on the two sides.
    np.testing.assert_array_equal(np.sort(y["left_digit"], 0), np.sort(y["right_digit"], 0))
    x = data["train"][0]
    assert x.dtype == np.float32 and x.max() == 1.0 and x.min() == 0.0
    # The canvas corners outside both digits stay empty.
    assert x[:, 28:, :8].max() == 0.0 and x[:, :8, 28:].max() == 0.0


def test_read_idx_module_constants():
    assert mnist_module.TASKS == tuple(TASKS)
    assert (mnist_module.CANVAS, mnist_module.OFFSET) == (36, 8)
