import csv
import importlib
import io
import os
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from keras_branching.datasets.omniglot import ALPHABET_ORDER, omniglot

# `keras_branching.datasets.omniglot` is the loader function (the public API),
# which shadows the submodule of the same name: take the module itself.
omniglot_module = importlib.import_module("keras_branching.datasets.omniglot")

REAL = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "omniglot")


def _png(value):
    """A 105x105 one-bit PNG: white background, a black square of side `value`."""
    pixels = np.ones((105, 105), bool)
    pixels[10 : 10 + value, 10 : 10 + value] = False
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("1").save(buffer, format="PNG")
    return buffer.getvalue()


def _fixture(directory, characters=None, drawings=10):
    """Tiny official-layout zips: the first 3 alphabets of the published order."""
    characters = characters or {"Gujarati": 3, "Sylheti": 2, "Arcadian": 4}
    parts = {"Gujarati": "images_background", "Arcadian": "images_background"}
    archives = {p: zipfile.ZipFile(directory / f"{p}.zip", "w") for p in omniglot_module.PARTS}
    number = 0
    for alphabet, count in characters.items():
        part = parts.get(alphabet, "images_evaluation")
        for c in range(count):
            number += 1
            for d in range(drawings):
                name = f"{part}/{alphabet}/character{c + 1:02d}/{number:04d}_{d + 1:02d}.png"
                archives[part].writestr(name, _png(c + 1 + d))
    for archive in archives.values():
        archive.close()
    return characters


def test_parses_official_layout_and_splits(tmp_path):
    characters = _fixture(tmp_path)
    data = omniglot(str(tmp_path), num_alphabets=3, image_size=105, cache_dir=False)
    assert data.tasks == ["Gujarati", "Sylheti", "Arcadian"]
    assert data.num_classes == characters
    for task, count in characters.items():
        sizes = {s: len(data.arrays[s][task][1]) for s in ("train", "validation", "test")}
        assert sizes == {"train": 5 * count, "validation": 2 * count, "test": 3 * count}
        x, y = data.arrays["train"][task]
        assert x.shape[1:] == (105, 105, 1) and x.dtype == np.float32
        assert sorted(set(y.tolist())) == list(range(count))
    # Inverted: background 0, ink 1; character c + 1 drawing d is a square of c + 1 + d.
    x, y = data.arrays["test"]["Arcadian"]
    assert set(np.unique(x).tolist()) == {0.0, 1.0}
    sides = np.sqrt(x.sum(axis=(1, 2, 3)))
    assert np.all(sides >= y + 1) and np.all(sides <= y + 10)
    # The splits of each character are disjoint and cover its 10 drawings.
    for task in characters:
        for label in range(characters[task]):
            seen = [
                tuple(
                    np.sqrt(
                        data.arrays[s][task][0][data.arrays[s][task][1] == label].sum(
                            axis=(1, 2, 3)
                        )
                    )
                    .round()
                    .astype(int)
                )
                for s in ("train", "validation", "test")
            ]
            everything = [v for split in seen for v in split]
            assert sorted(everything) == list(range(label + 1, label + 11))


def test_datasets_resize_and_seed(tmp_path):
    _fixture(tmp_path)
    data = omniglot(str(tmp_path), num_alphabets=2, image_size=28, seed=3, cache_dir=False)
    image, label = next(iter(data.train["Sylheti"]))
    assert tuple(image.shape) == (28, 28, 1) and 0.0 <= float(image.numpy().min())
    assert float(image.numpy().max()) <= 1.0 and int(label) in (0, 1)
    assert set(data.validation) == set(data.test) == {"Gujarati", "Sylheti"}
    again = omniglot(str(tmp_path), num_alphabets=2, image_size=28, seed=3, cache_dir=False)
    other = omniglot(str(tmp_path), num_alphabets=2, image_size=28, seed=4, cache_dir=False)
    same = again.arrays["train"]["Gujarati"][0]
    np.testing.assert_array_equal(same, data.arrays["train"]["Gujarati"][0])
    assert not np.array_equal(same, other.arrays["train"]["Gujarati"][0])


def test_cache_is_reused(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    _fixture(tmp_path / "data")
    cache = tmp_path / "cache"
    first = omniglot(str(tmp_path / "data"), num_alphabets=3, image_size=20, cache_dir=str(cache))
    assert len(list(cache.glob("*.npz"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(omniglot_module, "_decode", fail)
    second = omniglot(str(tmp_path / "data"), num_alphabets=3, image_size=20, cache_dir=str(cache))
    assert second.num_classes == first.num_classes
    for task in first.tasks:
        for split in ("train", "validation", "test"):
            np.testing.assert_allclose(
                second.arrays[split][task][0], first.arrays[split][task][0], atol=1 / 255
            )
            np.testing.assert_array_equal(
                second.arrays[split][task][1], first.arrays[split][task][1]
            )


def test_environment_variable(tmp_path, monkeypatch):
    (tmp_path / "omniglot").mkdir()
    _fixture(tmp_path / "omniglot")
    monkeypatch.setenv("KERAS_BRANCHING_DATA", str(tmp_path))
    data = omniglot(num_alphabets=1, image_size=16, cache_dir=False)
    assert data.num_classes == {"Gujarati": 3}


def test_missing_files_are_named(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        omniglot(str(tmp_path / "nowhere"))
    (tmp_path / "images_background.zip").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="images_evaluation.zip"):
        omniglot(str(tmp_path))
    monkeypatch.setenv("KERAS_BRANCHING_DATA", str(tmp_path / "empty"))

    def offline(alphabets):
        raise ConnectionError("no network")

    monkeypatch.setattr(omniglot_module, "_load_tfds", offline)
    with pytest.raises(FileNotFoundError, match=r"images_background.zip.*no network"):
        omniglot(cache_dir=False)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_alphabets": 0}, ValueError, r"num_alphabets=0"),
        ({"num_alphabets": 51}, ValueError, r"\[1, 50\]"),
        ({"image_size": 2.5}, TypeError, r"image_size=2.5"),
        ({"seed": -1}, ValueError, r"seed=-1"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        omniglot(str(tmp_path), **kwargs)


@pytest.mark.skipif(not os.path.isdir(REAL), reason="the shared Omniglot copy is not present")
def test_real_omniglot(tmp_path):
    start = time.time()
    data = omniglot(REAL, image_size=28, cache_dir=str(tmp_path))
    first = time.time() - start
    with open(os.path.join(REAL, "alphabets.csv")) as f:
        counts = {row["alphabet"]: int(row["n_characters"]) for row in csv.DictReader(f)}
    assert data.tasks == list(ALPHABET_ORDER[:20])
    assert data.num_classes == {a: counts[a] for a in data.tasks}
    for task in data.tasks:
        for split, per_character in (("train", 10), ("validation", 4), ("test", 6)):
            labels = data.arrays[split][task][1]
            assert np.bincount(labels).tolist() == [per_character] * counts[task]
        # Disjoint splits: no drawing appears in two splits.
        flat = {
            s: {x.tobytes() for x in data.arrays[s][task][0]}
            for s in ("train", "validation", "test")
        }
        assert not (flat["train"] & flat["test"]) and not (flat["train"] & flat["validation"])
    start = time.time()
    again = omniglot(REAL, image_size=28, cache_dir=str(tmp_path))
    assert time.time() - start < first / 3
    assert again.num_classes == data.num_classes


def test_keras_names_key_the_datasets_with_names_a_model_accepts():
    images, labels = np.zeros((2, 8, 8, 1), "float32"), np.zeros(2, "int32")
    tasks = ["Gujarati", "Malay_(Jawi_-_Arabic)"]
    arrays = {split: {t: (images, labels) for t in tasks} for split in omniglot_module.SPLITS}
    data = omniglot_module.OmniglotTasks(tasks, {t: 1 for t in tasks}, arrays, 8, "test")
    assert data.keras_names == {
        "Gujarati": "Gujarati",
        "Malay_(Jawi_-_Arabic)": "Malay__Jawi_-_Arabic_",
    }
    assert list(data.datasets("test", keras_names=True)) == ["Gujarati", "Malay__Jawi_-_Arabic_"]
    assert list(data.train) == tasks
    with pytest.raises(ValueError, match="split='dev'"):
        data.datasets("dev")


def test_small_images_and_per_task_arrays(tmp_path):
    characters = _fixture(tmp_path)
    data = omniglot(str(tmp_path), num_alphabets=3, image_size=12, cache_dir=False)
    assert data.image_size == 12
    x, y = data.task_arrays("train")
    assert list(x) == list(y) == ["Gujarati", "Sylheti", "Arcadian"]
    for task, count in characters.items():
        assert x[task].shape == (5 * count, 12, 12, 1) and x[task].dtype == np.float32
        assert y[task].shape == (5 * count,) and y[task].max() == count - 1
        assert 0.0 <= x[task].min() and x[task].max() <= 1.0 and x[task].max() > 0.5
    x_test, _ = data.task_arrays("test", keras_names=False)
    np.testing.assert_array_equal(x_test["Sylheti"], data.arrays["test"]["Sylheti"][0])
    with pytest.raises(ValueError, match="split='dev'"):
        data.task_arrays("dev")


def test_per_task_batches_from_the_datasets(tmp_path):
    from keras_branching.datasets import task_batches

    _fixture(tmp_path)
    data = omniglot(str(tmp_path), num_alphabets=3, image_size=10, cache_dir=False)
    x, y = next(iter(task_batches(data.datasets("train", keras_names=True), 4, seed=0)))
    assert list(x) == list(data.keras_names.values())
    assert all(tuple(v.shape) == (4, 10, 10, 1) for v in x.values())
    assert all(tuple(v.shape) == (4,) for v in y.values())


def test_each_image_size_has_its_own_cache(tmp_path):
    (tmp_path / "data").mkdir()
    _fixture(tmp_path / "data")
    for size in (12, 16, 12):
        data = omniglot(
            str(tmp_path / "data"),
            num_alphabets=1,
            image_size=size,
            cache_dir=str(tmp_path / "cache"),
        )
        assert data.arrays["train"]["Gujarati"][0].shape[1:] == (size, size, 1)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2
