"""Damaged data files: every loader error names the file (and the zip member).

A cache that cannot be loaded is rebuilt from the source files with a
warning; every data helper is deterministic given its `seed`.
"""

import gzip
import hashlib
import importlib
import io
import re
import warnings
import zipfile

import numpy as np
import pytest
from PIL import Image

from keras_branching.datasets import census_income, multi_mnist, omniglot, synthetic_tasks
from keras_branching.datasets.mnist import read_idx
from tests.datasets.test_census import _row
from tests.datasets.test_census import _write as write_census
from tests.datasets.test_multi_mnist import idx_bytes, write_mnist
from tests.datasets.test_omniglot import _fixture as write_omniglot
from tests.fresh_process import run_python

omniglot_module = importlib.import_module("keras_branching.datasets.omniglot")
GUJARATI_MEMBER = "images_background/Gujarati/character01/0001_01.png"


def _named(path):
    return re.escape(str(path))


# --- Omniglot zips and images -------------------------------------------------


def test_corrupted_omniglot_zip_names_the_file(tmp_path):
    write_omniglot(tmp_path)
    path = tmp_path / "images_evaluation.zip"
    path.write_bytes(b"this is not a zip file" * 10)
    with pytest.raises(ValueError, match=_named(path) + ".*corrupt or truncated"):
        omniglot(str(tmp_path), num_alphabets=2, image_size=16, cache_dir=False)


def test_truncated_omniglot_zip_names_the_file(tmp_path):
    write_omniglot(tmp_path)
    path = tmp_path / "images_background.zip"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=_named(path)):
        omniglot(str(tmp_path), num_alphabets=1, image_size=16, cache_dir=False)


def test_bad_png_member_names_the_zip_and_the_member(tmp_path):
    write_omniglot(tmp_path)
    path = tmp_path / "images_background.zip"
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("images_background/Gujarati/character01/0001_99.png", b"not a png")
    member = "images_background/Gujarati/character01/0001_99.png"
    with pytest.raises(ValueError, match=_named(f"{path}:{member}") + ".*as a PNG"):
        omniglot(str(tmp_path), num_alphabets=1, image_size=16, cache_dir=False)


def test_damaged_member_bytes_name_the_member(tmp_path):
    write_omniglot(tmp_path)
    path = tmp_path / "images_background.zip"
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    raw = bytearray(path.read_bytes())
    start = raw.index(members[GUJARATI_MEMBER])
    raw[start + 40] ^= 0xFF  # the CRC no longer matches
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=re.escape(repr(GUJARATI_MEMBER)) + ".*" + _named(path)):
        omniglot(str(tmp_path), num_alphabets=1, image_size=16, cache_dir=False)


def test_bad_png_in_an_extracted_folder_names_the_file(tmp_path):
    write_omniglot(tmp_path)
    for part in omniglot_module.PARTS:
        with zipfile.ZipFile(tmp_path / f"{part}.zip") as archive:
            archive.extractall(tmp_path / "extracted")
    bad = tmp_path / "extracted" / "images_evaluation" / "Sylheti" / "character02" / "x.png"
    bad.write_bytes(b"\x89PNG but truncated")
    with pytest.raises(ValueError, match=_named(bad)):
        omniglot(str(tmp_path / "extracted"), num_alphabets=2, image_size=16, cache_dir=False)


def test_zip_without_the_alphabets_names_the_files(tmp_path):
    write_omniglot(tmp_path)
    for part in omniglot_module.PARTS:
        zipfile.ZipFile(tmp_path / f"{part}.zip", "w").close()
    with pytest.raises(ValueError, match=r"images_background.zip.*\['Gujarati'\]"):
        omniglot(str(tmp_path), num_alphabets=1, image_size=16, cache_dir=False)


# --- The Omniglot cache -------------------------------------------------------


def _load_with_cache(tmp_path):
    return omniglot(
        str(tmp_path / "data"), num_alphabets=2, image_size=16, cache_dir=str(tmp_path / "cache")
    )


@pytest.mark.parametrize(
    "damage",
    ["truncated", "garbage", "empty", "npy", "other_arrays", "other_shapes"],
)
def test_bad_cache_is_rebuilt_with_a_warning(tmp_path, monkeypatch, damage):
    (tmp_path / "data").mkdir()
    write_omniglot(tmp_path / "data")
    first = _load_with_cache(tmp_path)
    (cache,) = (tmp_path / "cache").glob("*.npz")
    content = cache.read_bytes()
    if damage == "truncated":
        cache.write_bytes(content[: len(content) // 2])
    elif damage == "garbage":
        cache.write_bytes(b"\x00garbage" * 100)
    elif damage == "empty":
        cache.write_bytes(b"")
    elif damage == "npy":
        with open(cache, "wb") as f:
            np.save(f, np.zeros(3))
    elif damage == "other_arrays":
        np.savez(cache, something=np.zeros(3))
    else:
        with np.load(cache) as stored:
            arrays = {k: stored[k] for k in stored.files}
        arrays["x_test_1"] = arrays["x_test_1"][:, :8]
        np.savez(cache, **arrays)
    with pytest.warns(UserWarning, match=_named(cache) + ".*rebuilding"):
        second = _load_with_cache(tmp_path)
    for task in first.tasks:
        for split in ("train", "validation", "test"):
            np.testing.assert_array_equal(
                second.arrays[split][task][0], first.arrays[split][task][0]
            )
            np.testing.assert_array_equal(
                second.arrays[split][task][1], first.arrays[split][task][1]
            )
    # The rebuilt cache serves the next call without decoding or warning.

    def fail(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the rebuilt cache")

    monkeypatch.setattr(omniglot_module, "_decode", fail)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third = _load_with_cache(tmp_path)
    assert third.num_classes == first.num_classes


def test_unwritable_cache_folder_warns_and_returns_the_data(tmp_path):
    (tmp_path / "data").mkdir()
    write_omniglot(tmp_path / "data")
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match=r"Could not write the Omniglot cache file .*cache"):
        data = _load_with_cache(tmp_path)
    assert data.num_classes == {"Gujarati": 3, "Sylheti": 2}


# --- MNIST IDX files ----------------------------------------------------------


def _replace(path, data, compress=True):
    if compress:
        data = gzip.compress(data)
    path.write_bytes(data)


def test_wrong_idx_magic_names_the_file(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    _replace(path, idx_bytes(np.zeros((40, 28, 28))))  # images where labels belong
    with pytest.raises(ValueError, match=_named(path) + ".*0x00000801.*0x00000803"):
        multi_mnist(tmp_path, num_validation=10)


def test_truncated_idx_names_the_file(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    _replace(path, idx_bytes(np.zeros((40, 28, 28)))[:-100])
    with pytest.raises(ValueError, match=_named(path) + " is truncated.*\\(40, 28, 28\\)"):
        multi_mnist(tmp_path, num_validation=10)


def test_idx_longer_than_its_header_names_the_file(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    _replace(path, idx_bytes(np.zeros(12)) + b"\x00\x01")
    with pytest.raises(ValueError, match=_named(path) + " is longer than its header"):
        multi_mnist(tmp_path, num_validation=10)


def test_idx_shorter_than_its_header_names_the_file(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    _replace(path, bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(ValueError, match=_named(path) + ".*16-byte header"):
        multi_mnist(tmp_path, num_validation=10)


def test_truncated_gzip_names_the_file(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(ValueError, match="Could not read the MNIST file " + _named(path)):
        multi_mnist(tmp_path, num_validation=10)


def test_file_that_is_not_gzip_names_the_file(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(b"plain bytes, not gzip")
    with pytest.raises(ValueError, match="Could not read the MNIST file " + _named(path)):
        multi_mnist(tmp_path, num_validation=10)


def test_images_of_another_size_name_the_file(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    _replace(path, idx_bytes(np.zeros((12, 32, 32))))
    with pytest.raises(ValueError, match="28x28 images in " + _named(path) + ".*\\(32, 32\\)"):
        multi_mnist(tmp_path, num_validation=10)


def test_label_count_mismatch_names_both_files(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    _replace(path, idx_bytes(np.zeros(39)))
    with pytest.raises(ValueError, match=_named(path) + ".*train-images.*39 labels and 40"):
        multi_mnist(tmp_path, num_validation=10)


def test_labels_out_of_range_name_the_file(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    _replace(path, idx_bytes(np.full(12, 10)))
    with pytest.raises(ValueError, match="0 to 9 in " + _named(path) + ".*Received: 10"):
        multi_mnist(tmp_path, num_validation=10)


def test_read_idx_reads_plain_files(tmp_path):
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.arange(8).reshape(2, 2, 2)))
    np.testing.assert_array_equal(read_idx(path, 0x00000803), np.arange(8).reshape(2, 2, 2))


# --- Census-Income --------------------------------------------------------------


def test_corrupt_census_gzip_names_the_file(tmp_path):
    path = tmp_path / "census-income.test.gz"
    path.write_bytes(b"\x1f\x8b but not really gzip")
    with pytest.raises(ValueError, match="Could not read " + _named(path)):
        census_income(tmp_path)


def test_truncated_census_gzip_names_the_file(tmp_path):
    write_census(tmp_path, [_row(i) for i in range(40)])
    path = tmp_path / "census-income.test.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ValueError, match="Could not read " + _named(path)):
        census_income(tmp_path)


def test_census_bad_line_names_the_file_and_the_line(tmp_path):
    lines = [_row(i) for i in range(10)]
    lines[3] = lines[3].replace("Private", "Private, extra")
    write_census(tmp_path, lines)
    path = tmp_path / "census-income.test.gz"
    with pytest.raises(ValueError, match="line 4 of " + _named(path)):
        census_income(tmp_path)


def test_census_non_utf8_names_the_file(tmp_path):
    path = tmp_path / "census-income.test"
    path.write_bytes(_row(0).encode() + b"\n\xff\xfe\xfa.\n")
    with pytest.raises(ValueError, match="Could not read " + _named(path)):
        census_income(tmp_path)


def test_empty_census_file_names_the_file(tmp_path):
    write_census(tmp_path, [""])
    with pytest.raises(ValueError, match="rows in " + _named(tmp_path / "census-income.test.gz")):
        census_income(tmp_path)


# --- Deterministic data helpers -------------------------------------------------


def _digest(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _digests(folder):
    """A digest of every data helper's output, on the fixtures in `folder`."""
    mnist = multi_mnist(folder / "mnist", num_validation=10, seed=3)
    census = census_income(folder / "census", tasks=("education", "marital"), seed=3)
    omni = omniglot(
        str(folder / "omniglot"), num_alphabets=2, image_size=12, seed=3, cache_dir=False
    )
    x, y, _ = synthetic_tasks(3, 2, 50, input_dim=12, seed=3)
    return {
        "multi_mnist": _digest(
            *(
                a
                for s in ("train", "validation", "test")
                for a in (mnist[s][0], *mnist[s][1].values())
            )
        ),
        "census": _digest(*(a for s in census.values() for a in (s[0], *s[1].values()))),
        "omniglot": _digest(*(a for s in omni.arrays.values() for p in s.values() for a in p)),
        "synthetic": _digest(x, *y.values()),
    }


def _write_all(folder):
    write_mnist(folder / "mnist")
    (folder / "census").mkdir()
    write_census(folder / "census", [_row(i) for i in range(30)])
    (folder / "omniglot").mkdir()
    write_omniglot(folder / "omniglot")


def test_data_helpers_are_deterministic_and_seeded(tmp_path):
    _write_all(tmp_path)
    first = _digests(tmp_path)
    np.random.seed(123)  # the global seed plays no part
    assert _digests(tmp_path) == first
    other = multi_mnist(tmp_path / "mnist", num_validation=10, seed=4)
    same = multi_mnist(tmp_path / "mnist", num_validation=10, seed=3)
    assert not np.array_equal(other["train"][0], same["train"][0])


_FRESH = """
import json, pathlib, sys
sys.path.insert(0, {tests!r})
from tests.reliability.test_loaders import _digests
print(json.dumps(_digests(pathlib.Path({folder!r}))))
"""


def test_data_helpers_match_in_a_fresh_jax_process(tmp_path):
    import json

    from tests.fresh_process import REPO

    _write_all(tmp_path)
    script = tmp_path / "digests.py"
    script.write_text(_FRESH.format(tests=REPO, folder=str(tmp_path)))
    output = run_python(script, cwd=tmp_path, timeout=300, backend="jax")
    assert json.loads(output.strip().splitlines()[-1]) == _digests(tmp_path)


def test_png_fixture_is_a_real_png():
    # Guards the fixtures above: the omniglot test helper writes decodable PNGs.
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(buffer, format="PNG")
    assert omniglot_module._decode(buffer.getvalue(), 8).shape == (8, 8)
