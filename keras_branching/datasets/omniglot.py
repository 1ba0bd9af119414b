"""Omniglot as 20 (or up to 50) classification tasks, one per alphabet."""

import hashlib
import io
import json
import numbers
import os
import re
import warnings
import zipfile
import zlib

import numpy as np

from keras_branching._validation import sanitize_name

#: The published order of the 50 alphabets (Liang et al. 2018; Ramachandran
#: and Le 2019; Maziarz et al. 2019). The multi-task protocol takes the first 20.
ALPHABET_ORDER = (
    "Gujarati",
    "Sylheti",
    "Arcadian",
    "Tibetan",
    "Old_Church_Slavonic_(Cyrillic)",
    "Angelic",
    "Malay_(Jawi_-_Arabic)",
    "Sanskrit",
    "Cyrillic",
    "Anglo-Saxon_Futhorc",
    "Syriac_(Estrangelo)",
    "Ge_ez",
    "Japanese_(katakana)",
    "Keble",
    "Manipuri",
    "Alphabet_of_the_Magi",
    "Gurmukhi",
    "Korean",
    "Early_Aramaic",
    "Atemayar_Qelisayer",
    "Tagalog",
    "Mkhedruli_(Georgian)",
    "Inuktitut_(Canadian_Aboriginal_Syllabics)",
    "Tengwar",
    "Hebrew",
    "N_Ko",
    "Grantha",
    "Latin",
    "Syriac_(Serto)",
    "Tifinagh",
    "Balinese",
    "Mongolian",
    "ULOG",
    "Futurama",
    "Malayalam",
    "Oriya",
    "Ojibwe_(Canadian_Aboriginal_Syllabics)",
    "Avesta",
    "Kannada",
    "Bengali",
    "Japanese_(hiragana)",
    "Armenian",
    "Aurek-Besh",
    "Glagolitic",
    "Asomtavruli_(Georgian)",
    "Greek",
    "Braille",
    "Burmese_(Myanmar)",
    "Blackfoot_(Canadian_Aboriginal_Syllabics)",
    "Atlantean",
)

#: The two parts of the official release, as zips (or extracted folders).
PARTS = ("images_background", "images_evaluation")
SPLITS = ("train", "validation", "test")
_ORIGINAL_SIZE = 105
_CACHE_VERSION = 1
_PATH = re.compile(r"^(images_background|images_evaluation)/([^/]+)/(character\d+)/([^/]+\.png)$")


class OmniglotTasks:
    """The multi-task Omniglot data: one classification task per alphabet.

    Attributes:
        tasks: the alphabet names, in the published order.
        keras_names: dict keyed by alphabet: a name Keras accepts for the
            task's input and output (the alphabet name with every character
            but letters, digits and `_.-` replaced by `_`; `"Malay_(Jawi_-_Arabic)"`
            becomes `"Malay__Jawi_-_Arabic_"`). Use it for `Task` names and
            to key the datasets (see `datasets`).
        num_classes: dict keyed by alphabet: its number of characters.
        arrays: dict keyed by split (`"train"`, `"validation"`, `"test"`) of
            dicts keyed by alphabet of `(images, labels)` numpy arrays;
            images are float32 of shape `(n, size, size, 1)` with ink = 1 and
            background = 0, labels int32 character indices.
        image_size: the side of the images.
        source: where the images were read from.

    Per-task inputs: every alphabet has its own images, so the data suits a
    model whose `inputs` are keyed by task (`task_arrays(split)` gives `x`
    and `y` keyed by task; `datasets(split, keras_names=True)` feeds
    `keras_branching.datasets.task_batches` for one batch per task per
    step).
    """

    def __init__(self, tasks, num_classes, arrays, image_size, source):
        self.tasks = list(tasks)
        self.num_classes = dict(num_classes)
        self.arrays = arrays
        self.image_size = image_size
        self.source = source
        self.keras_names = {task: sanitize_name(task) for task in self.tasks}

    def datasets(self, split, keras_names=False):
        """Per-task unbatched `tf.data.Dataset`s of `(image, label)` for `split`.

        Args:
            split: `"train"`, `"validation"` or `"test"`.
            keras_names: key the datasets by `keras_names` (the task names a
                model can use) instead of by alphabet.

        Returns:
            A dict of datasets, in the order of `tasks`.
        """
        import tensorflow as tf

        if split not in SPLITS:
            raise ValueError(f"Expected `split` to be one of {SPLITS}. Received: split={split!r}")
        return {
            self.keras_names[task] if keras_names else task: tf.data.Dataset.from_tensor_slices(
                self.arrays[split][task]
            )
            for task in self.tasks
        }

    def task_arrays(self, split, keras_names=True):
        """Per-task inputs and labels of `split`, for models with one input per task.

        Each alphabet has its own images, so a model built with `inputs` keyed
        by task takes `x` keyed by task. The tasks hold different numbers of
        examples: feed them one batch per task per step with
        `keras_branching.datasets.task_batches(data.datasets(split,
        keras_names=True), batch_size)`, or evaluate task by task.

        Args:
            split: `"train"`, `"validation"` or `"test"`.
            keras_names: key by `keras_names` (the default: names a model
                accepts) instead of by alphabet.

        Returns:
            A pair `(x, y)` of dicts keyed by task, in the order of `tasks`:
            `x[task]` float32 images `(n_task, size, size, 1)`, `y[task]`
            int32 labels `(n_task,)` (for `sparse_categorical_crossentropy`
            with a `num_classes[task]`-unit head).

        Raises:
            ValueError: for an unknown `split`.

        Example:

        >>> import numpy as np
        >>> arrays = {s: {"Ge_ez": (np.zeros((2, 8, 8, 1)), np.zeros(2, "int32"))}
        ...           for s in SPLITS}
        >>> x, y = OmniglotTasks(["Ge_ez"], {"Ge_ez": 1}, arrays, 8, "").task_arrays("test")
        >>> x["Ge_ez"].shape, y["Ge_ez"].shape
        ((2, 8, 8, 1), (2,))
        """
        if split not in SPLITS:
            raise ValueError(f"Expected `split` to be one of {SPLITS}. Received: split={split!r}")
        key = (lambda t: self.keras_names[t]) if keras_names else (lambda t: t)
        x = {key(t): self.arrays[split][t][0] for t in self.tasks}
        y = {key(t): self.arrays[split][t][1] for t in self.tasks}
        return x, y

    @property
    def train(self):
        """Per-task training datasets (50% of each character's drawings)."""
        return self.datasets("train")

    @property
    def validation(self):
        """Per-task validation datasets (20% of each character's drawings)."""
        return self.datasets("validation")

    @property
    def test(self):
        """Per-task test datasets (30% of each character's drawings)."""
        return self.datasets("test")

    def __repr__(self):
        sizes = {s: sum(len(self.arrays[s][t][1]) for t in self.tasks) for s in SPLITS}
        return (
            f"OmniglotTasks({len(self.tasks)} alphabets, image_size={self.image_size}, "
            f"examples={sizes}, source={self.source!r})"
        )


def _find_parts(directory):
    """Paths of the two parts under `directory` (zip or folder), or None each."""
    found = {}
    for part in PARTS:
        zip_path = os.path.join(directory, part + ".zip")
        folder = os.path.join(directory, part)
        if os.path.isfile(zip_path):
            found[part] = zip_path
        elif os.path.isdir(folder):
            found[part] = folder
        else:
            found[part] = None
    return found


def _read_parts(parts, alphabets):
    """`{alphabet: {character: [(where, png bytes), ...]}}` from the official layout.

    `where` names the file a PNG came from (`archive.zip:member` for a zip
    member), for error messages.
    """
    wanted = set(alphabets)
    images = {a: {} for a in alphabets}
    for part, path in parts.items():
        if path.endswith(".zip"):
            _read_zip(path, part, wanted, images)
        else:
            for alphabet in wanted:
                root = os.path.join(path, alphabet)
                if not os.path.isdir(root):
                    continue
                for character in os.listdir(root):
                    for file in os.listdir(os.path.join(root, character)):
                        if file.endswith(".png"):
                            where = os.path.join(root, character, file)
                            try:
                                with open(where, "rb") as f:
                                    data = f.read()
                            except OSError as error:
                                raise ValueError(
                                    f"Could not read the Omniglot image {where}: {error}"
                                ) from error
                            images[alphabet].setdefault(character, []).append((file, where, data))
    missing = [a for a in alphabets if not images[a]]
    if missing:
        raise ValueError(
            f"The Omniglot files {sorted(parts.values())} hold no images of the "
            f"alphabets {missing}. Expected the official layout "
            "images_{background,evaluation}/<Alphabet>/characterNN/XXXX_YY.png"
        )
    return {
        a: {
            c: [(where, data) for _, where, data in sorted(files)]
            for c, files in sorted(chars.items())
        }
        for a, chars in images.items()
    }


def _read_zip(path, part, wanted, images):
    """Adds the wanted alphabets' PNGs of the zip `path` to `images`."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ValueError(
            f"Could not open the Omniglot zip {path}: {error}. The file is corrupt or "
            "truncated; download it again (images_background.zip and images_evaluation.zip "
            "of the official release)"
        ) from error
    with archive:
        for name in archive.namelist():
            match = _PATH.match(name)
            if match and match.group(1) == part and match.group(2) in wanted:
                alphabet, character = match.group(2), match.group(3)
                try:
                    data = archive.read(name)
                except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
                    raise ValueError(
                        f"Could not read the member {name!r} of the Omniglot zip {path}: "
                        f"{error}. The zip is corrupt or truncated; download it again"
                    ) from error
                images[alphabet].setdefault(character, []).append(
                    (match.group(4), f"{path}:{name}", data)
                )


def _decode(png, image_size, where="<bytes>"):
    """Inverted (ink = 1) float32 image of side `image_size`; `where` names it in errors."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(png)) as image:
            pixels = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise ValueError(
            f"Could not decode the Omniglot image {where} as a PNG: {type(error).__name__}: {error}"
        ) from error
    return _prepare(pixels, image_size)


def _prepare(gray, image_size):
    """Inverts a [0, 1] grey image and resizes it (area-aware bilinear)."""
    from PIL import Image

    ink = 1.0 - gray
    if ink.shape != (image_size, image_size):
        ink = np.asarray(
            Image.fromarray(ink.astype(np.float32), mode="F").resize(
                (image_size, image_size), Image.Resampling.BILINEAR
            )
        )
    return np.clip(ink, 0.0, 1.0)


def _split(images_by_character, position, seed):
    """Per-character 50/20/30 split. Returns {split: (uint8 images, labels)}."""
    rng = np.random.default_rng([seed, position])
    out = {s: ([], []) for s in SPLITS}
    for label, images in enumerate(images_by_character):
        n = len(images)
        order = rng.permutation(n)
        n_train, n_validation = int(0.5 * n), int(0.2 * n)
        bounds = {
            "train": order[:n_train],
            "validation": order[n_train : n_train + n_validation],
            "test": order[n_train + n_validation :],
        }
        for split, index in bounds.items():
            out[split][0].extend(images[i] for i in index)
            out[split][1].extend([label] * len(index))
    return out


def _load_tfds(alphabets):
    """`{alphabet: [[gray image, ...] per character]}` through tensorflow-datasets."""
    import tensorflow_datasets as tfds

    dataset, info = tfds.load("omniglot", split="train+test", with_info=True, shuffle_files=False)
    names = info.features["alphabet"].names
    wanted = {names.index(a): a for a in alphabets}
    by = {a: {} for a in alphabets}
    for example in tfds.as_numpy(dataset):
        alphabet = int(example["alphabet"])
        if alphabet in wanted:
            gray = example["image"][..., 0].astype(np.float32) / 255.0
            by[wanted[alphabet]].setdefault(int(example["alphabet_char_id"]), []).append(gray)
    return {a: [chars[c] for c in sorted(chars)] for a, chars in by.items()}


def _cache_path(cache_dir, key):
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(cache_dir, f"omniglot_{digest}.npz")


def _source_key(parts):
    return [
        [part, os.path.abspath(path), os.path.getsize(path), int(os.path.getmtime(path))]
        for part, path in sorted(parts.items())
    ]


def omniglot(data_dir=None, num_alphabets=20, image_size=_ORIGINAL_SIZE, seed=0, cache_dir=None):
    """Loads Omniglot as one classification task per alphabet.

    The multi-task protocol of the allocation papers (Liang et al. 2018;
    Ramachandran and Le 2019; Maziarz et al. 2019): the first
    `num_alphabets` alphabets of the published order (`ALPHABET_ORDER`),
    one task per alphabet (classify the character within it), and, per
    character, its 20 drawings split 50% / 20% / 30% into train /
    validation / test with a fixed seed. Images are inverted (ink = 1) and
    scaled to [0, 1]; `image_size` other than 105 resizes them.

    The images come from, in order: `data_dir`, which must hold the
    official `images_background.zip` and `images_evaluation.zip` (or their
    extracted folders); else `$KERAS_BRANCHING_DATA/omniglot`; else
    tensorflow-datasets' `omniglot`, when tfds can fetch it. Decoding is
    done once: the result is cached as an `.npz` in `cache_dir` (default
    `$KERAS_BRANCHING_CACHE`, else `~/.cache/keras_branching`), keyed by the
    settings and the source files, so a second call is fast. Cached images
    are stored with 8 bits (exact at 105 pixels, whose originals are 1-bit).

    Args:
        data_dir: folder holding the official zips, or None.
        num_alphabets: number of alphabets (tasks), 1 to 50.
        image_size: side of the returned square images, >= 8 (105 keeps
            the originals, as the paper does; 28 or 32 for a network that
            trains in minutes on a CPU: a smaller image cuts every
            convolution's cost by the ratio of areas, 105 -> 28 by 14x).
        seed: seed of the per-character split.
        cache_dir: folder of the decoded cache; `False` disables caching.

    Returns:
        An `OmniglotTasks` with per-task `train`, `validation` and `test`
        `tf.data` datasets, `num_classes` keyed by alphabet and the numpy
        `arrays`.

    A cache file that cannot be loaded (truncated, corrupt, or holding
    other arrays) is rebuilt from the source files with a `UserWarning`
    naming it; a cache folder that cannot be written gives a warning and
    the data, uncached.

    Raises:
        FileNotFoundError: when the files are in none of the places above,
            naming the files looked for.
        ValueError: for bad arguments; for a corrupt or truncated zip (the
            message names the zip and, for a damaged member, the member),
            and for an image that is not a readable PNG (naming the zip and
            member, or the file).

    Example:

    >>> data = omniglot("../shared/data/omniglot", image_size=28)  # doctest: +SKIP
    >>> data.tasks[0], data.num_classes["Gujarati"]  # doctest: +SKIP
    ('Gujarati', 48)
    """
    for name, value, low, high in (
        ("num_alphabets", num_alphabets, 1, len(ALPHABET_ORDER)),
        ("image_size", image_size, 8, 4096),
    ):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"Expected `{name}` to be an int. Received: {name}={value!r}")
        if not low <= value <= high:
            raise ValueError(f"Expected `{name}` in [{low}, {high}]. Received: {name}={value!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"Expected `seed` to be an int >= 0. Received: seed={seed!r}")
    alphabets = list(ALPHABET_ORDER[:num_alphabets])

    looked = []
    parts = None
    if data_dir is not None:
        if not os.path.isdir(data_dir):
            raise FileNotFoundError(
                f"The Omniglot data directory {data_dir!r} does not exist. Expected a "
                "folder holding images_background.zip and images_evaluation.zip"
            )
        found = _find_parts(data_dir)
        missing = [os.path.join(data_dir, p + ".zip") for p, path in found.items() if not path]
        if missing:
            raise FileNotFoundError(
                f"Missing Omniglot files in {data_dir!r}: {missing}. Expected the official "
                "images_background.zip and images_evaluation.zip (or their extracted folders)"
            )
        parts = found
    else:
        root = os.environ.get("KERAS_BRANCHING_DATA")
        if root:
            found = _find_parts(os.path.join(root, "omniglot"))
            if all(found.values()):
                parts = found
            else:
                looked += [os.path.join(root, "omniglot", p + ".zip") for p in PARTS]
        else:
            looked.append("$KERAS_BRANCHING_DATA/omniglot (the variable is not set)")

    if cache_dir is None:
        cache_dir = os.environ.get("KERAS_BRANCHING_CACHE") or os.path.join(
            os.path.expanduser("~"), ".cache", "keras_branching"
        )
    source = _source_key(parts) if parts else "tensorflow_datasets:omniglot"
    key = {
        "version": _CACHE_VERSION,
        "alphabets": alphabets,
        "image_size": int(image_size),
        "seed": int(seed),
        "source": source,
    }
    path = _cache_path(cache_dir, key) if cache_dir is not False else None
    if path and os.path.isfile(path):
        try:
            return _from_cache(path, alphabets, image_size, source)
        except _CACHE_ERRORS as error:
            warnings.warn(
                f"The Omniglot cache file {path} could not be loaded "
                f"({type(error).__name__}: {error}); rebuilding it from the source files.",
                UserWarning,
                stacklevel=2,
            )

    if parts:
        raw = _read_parts(parts, alphabets)
        characters = {
            a: [[_decode(png, image_size, where) for where, png in pngs] for pngs in chars.values()]
            for a, chars in raw.items()
        }
    else:
        try:
            grays = _load_tfds(alphabets)
        except Exception as error:  # tfds missing, offline, or a failed download
            raise FileNotFoundError(
                "Could not find the Omniglot files. Looked for images_background.zip "
                f"and images_evaluation.zip in: {looked}; pass `data_dir` or set "
                "KERAS_BRANCHING_DATA. tensorflow-datasets could not provide "
                f"'omniglot' either: {type(error).__name__}: {error}"
            ) from error
        characters = {
            a: [[_prepare(g, image_size) for g in chars] for chars in grays[a]] for a in alphabets
        }

    arrays = {s: {} for s in SPLITS}
    stored = {}
    for position, alphabet in enumerate(alphabets):
        quantised = [[np.round(x * 255).astype(np.uint8) for x in c] for c in characters[alphabet]]
        for split, (images, labels) in _split(quantised, position, seed).items():
            images = np.stack(images)[..., None]
            labels = np.asarray(labels, np.int32)
            stored[f"x_{split}_{position}"] = images
            stored[f"y_{split}_{position}"] = labels
            arrays[split][alphabet] = (images.astype(np.float32) / 255.0, labels)
    num_classes = {a: len(characters[a]) for a in alphabets}
    if path:
        temporary = path + f".{os.getpid()}.tmp.npz"
        try:
            os.makedirs(cache_dir, exist_ok=True)
            np.savez_compressed(temporary, **stored)
            os.replace(temporary, path)
        except OSError as error:
            warnings.warn(
                f"Could not write the Omniglot cache file {path} ({error}); the images "
                "will be decoded again next time. Pass `cache_dir` to choose another "
                "folder, or `cache_dir=False`.",
                UserWarning,
                stacklevel=2,
            )
            if os.path.exists(temporary):
                os.remove(temporary)
    return OmniglotTasks(alphabets, num_classes, arrays, int(image_size), source)


# What a damaged or foreign cache file raises while it is read.
_CACHE_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error)


def _from_cache(path, alphabets, image_size, source):
    """The arrays stored in the cache file `path`; a ValueError if they are inconsistent."""
    arrays = {s: {} for s in SPLITS}
    num_classes = {}
    # Open the file here: np.load leaks its handle when a damaged zip fails to open.
    with open(path, "rb") as f:
        stored = np.load(f)
        if not isinstance(stored, np.lib.npyio.NpzFile):
            raise ValueError(f"expected an .npz archive, found a {type(stored).__name__}")
        with stored:
            for position, alphabet in enumerate(alphabets):
                for split in SPLITS:
                    arrays[split][alphabet] = _cached_pair(
                        stored, split, position, alphabet, image_size
                    )
                num_classes[alphabet] = int(arrays["train"][alphabet][1].max()) + 1
    return OmniglotTasks(alphabets, num_classes, arrays, int(image_size), source)


def _cached_pair(stored, split, position, alphabet, image_size):
    images = stored[f"x_{split}_{position}"]
    labels = stored[f"y_{split}_{position}"]
    if (
        images.dtype != np.uint8
        or images.shape[1:] != (image_size, image_size, 1)
        or labels.shape != (len(images),)
        or not len(labels)
    ):
        raise ValueError(
            f"unexpected arrays for {alphabet!r} ({split}): images "
            f"{images.dtype}{images.shape}, labels {labels.shape}"
        )
    return images.astype(np.float32) / 255.0, labels
