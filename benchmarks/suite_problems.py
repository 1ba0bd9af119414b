"""The problems of the benchmark suite (`benchmarks/suite.py`), one entry each.

A `Problem` holds everything the suite needs to know about one benchmark:
how to load its splits, the tasks (heads, losses), the networks of each
family of methods (the blocks of the branching trees, the experts of the
routing plans, the layers of the allocation network), the test metric, and
the settings of every method in two sizes: `"full"` (the documented runs,
each network under about 10 minutes on 2 CPU cores) and `"quick"` (tiny
data and steps: the CI smoke test). A family left `None` means the methods
of that family do not apply; `skip` gives the reason shown in the report.

Adding a problem: write its loader and networks, then add one `Problem` to
`PROBLEMS`.
"""

import dataclasses
import os
from collections.abc import Callable

import keras

from keras_branching.task import Task

HERE = os.path.dirname(os.path.abspath(__file__))

TREE_METHODS = ("AffinityBranching", "LearnToBranch")
METHODS = TREE_METHODS + ("ShareRouting", "LearnedAllocation")


def data_dir(name):
    """`$KERAS_BRANCHING_DATA/<name>` if that variable is set, else `../shared/data/<name>`."""
    root = os.environ.get("KERAS_BRANCHING_DATA") or os.path.join(
        HERE, "..", "..", "shared", "data"
    )
    return os.path.join(root, name)


@dataclasses.dataclass
class Problem:
    """One benchmark problem.

    Attributes:
        name: the name on the command line.
        description: one line for the report.
        metric: `"mse"` (lower is better), `"accuracy"` or `"auc"`.
        load: `load(quick) -> dict` with `"train"`, `"validation"`, `"test"`
            (each an `(x, y)` pair, `y` keyed by task; with per-task inputs
            `x` is keyed by task too) and `"groups"` (the true grouping, or
            None).
        tasks: `tasks(data) -> list of Task`.
        blocks: `blocks(data) -> list of block factories` for
            `BranchedModelBuilder` (tree methods), or None.
        expert: `expert(units) -> factory` of one routing sub-network for
            `RoutingModelBuilder` (share routing; inputs are flattened), or
            None.
        allocation_layers: `allocation_layers(data) -> layers` for
            `AllocationBuilder` (learned allocation), or None.
        per_task_inputs: whether every task has its own examples (then every
            model is fed one batch per task per step, `datasets.task_batches`,
            and share routing, whose search takes one shared input, is skipped).
        settings: `{"full": {...}, "quick": {...}}`: `epochs`, `batch_size`,
            `learning_rate` (Adam), `steps_per_epoch` (per-task inputs),
            `random_plans` (how many random plans per searched plan),
            `routing_layers`, `routing_units` and one dict of settings per
            method: `search_epochs` plus the search's constructor arguments
            (a `metric` given by name is a `keras.metrics` class, instantiated).
            An affinity `budget` of `"groups"` is the size of the tree with
            the first block shared and the true groups after it.
        skip: method name -> reason it does not run on this problem.
        protocol: the paper's setting next to ours, for the docs.
    """

    name: str
    description: str
    metric: str
    load: Callable
    tasks: Callable
    blocks: Callable | None = None
    expert: Callable | None = None
    allocation_layers: Callable | None = None
    per_task_inputs: bool = False
    settings: dict = dataclasses.field(default_factory=dict)
    skip: dict = dataclasses.field(default_factory=dict)
    protocol: str = ""


def dense(units):
    return lambda: keras.layers.Dense(units, activation="relu")


def split_arrays(x, y, sizes):
    """`(x, y)` cut into consecutive train, validation and test parts of `sizes`."""
    parts, start = {}, 0
    for name, size in zip(("train", "validation", "test"), sizes):
        end = start + size
        parts[name] = (x[start:end], {t: v[start:end] for t, v in y.items()})
        start = end
    return parts


# Synthetic tasks: three groups of two, three Dense(64) blocks.


def load_synthetic(quick):
    from keras_branching.datasets import synthetic_tasks

    sizes = (256, 128, 128) if quick else (4000, 1000, 2000)
    x, y, groups = synthetic_tasks(3, 2, num_examples=sum(sizes), seed=0)
    return dict(split_arrays(x, y, sizes), groups=groups)


def regression_tasks(data):
    return [Task(t, head=lambda: keras.layers.Dense(1), loss="mse") for t in data["train"][1]]


SYNTHETIC = Problem(
    name="synthetic",
    description="synthetic_tasks(3, 2): three groups of two regression tasks, 3 x Dense(64)",
    metric="mse",
    load=load_synthetic,
    tasks=regression_tasks,
    blocks=lambda data: [dense(64)] * 3,
    expert=dense,
    allocation_layers=lambda data: [[dense(64)] * 3] * 3,
    settings={
        "full": {
            "epochs": 30,
            "batch_size": 64,
            "learning_rate": 1e-3,
            "random_plans": 5,
            "routing_layers": 2,
            "routing_units": 64,
            "AffinityBranching": {"search_epochs": 30, "budget": "groups", "num_samples": 500},
            "LearnToBranch": {"search_epochs": 30, "widths": [1, 3, 3]},
            "ShareRouting": {"search_epochs": 30, "num_experts": 3},
            "LearnedAllocation": {"search_epochs": 30, "allocation_learning_rate": 2e-2},
        },
        "quick": {
            "epochs": 1,
            "batch_size": 64,
            "learning_rate": 1e-3,
            "random_plans": 1,
            "run_eagerly": True,
            "routing_layers": 2,
            "routing_units": 16,
            "AffinityBranching": {"search_epochs": 1, "budget": "groups", "num_samples": 64},
            "LearnToBranch": {"search_epochs": 1, "widths": [1, 3, 3]},
            "ShareRouting": {
                "search_epochs": 1,
                "num_experts": 2,
                "warmup_epochs": 0,
                "steps_per_update": 2,
            },
            "LearnedAllocation": {"search_epochs": 1},
        },
    },
    protocol=(
        "The allocation paper's synthetic generator (its official code; also MMoE's), "
        "3 groups of 2 tasks, relatedness 0.9; 4,000 / 1,000 / 2,000 examples; the papers "
        "have no fixed size for it."
    ),
)


# MultiMNIST: six tasks in two groups, two conv blocks and a dense block.


def load_multi_mnist(quick):
    from keras_branching.datasets import multi_mnist

    data = multi_mnist(
        data_dir("mnist"),
        num_examples=300 if quick else 10_000,
        num_validation=200 if quick else 2_000,
        num_test=200 if quick else 5_000,
        seed=0,
    )
    return {k: data[k] for k in ("train", "validation", "test", "groups", "num_classes")}


def mnist_tasks(data):
    # Every task a softmax (2 classes for parity and >= 5), so that one reward
    # metric, SparseCategoricalAccuracy, scores every task in share routing.
    return [
        Task(
            name,
            head=lambda n=classes: keras.layers.Dense(n, activation="softmax"),
            loss="sparse_categorical_crossentropy",
        )
        for name, classes in data["num_classes"].items()
    ]


def conv_block(filters):
    return lambda: keras.Sequential(
        [
            keras.layers.Conv2D(filters, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
        ]
    )


def flat_dense(units):
    return lambda: keras.Sequential(
        [keras.layers.Flatten(), keras.layers.Dense(units, activation="relu")]
    )


MULTI_MNIST = Problem(
    name="multi_mnist",
    description="MultiMNIST: 36x36 canvases of two digits, six tasks in two groups",
    metric="accuracy",
    load=load_multi_mnist,
    tasks=mnist_tasks,
    blocks=lambda data: [conv_block(16), conv_block(32), flat_dense(64)],
    expert=dense,
    allocation_layers=lambda data: [
        [conv_block(16)] * 3,
        [conv_block(32)] * 3,
        [flat_dense(64)] * 3,
    ],
    settings={
        "full": {
            "epochs": 8,
            "batch_size": 128,
            "learning_rate": 1e-3,
            "random_plans": 5,
            "routing_layers": 2,
            "routing_units": 64,
            "AffinityBranching": {"search_epochs": 8, "budget": "groups", "num_samples": 500},
            "LearnToBranch": {"search_epochs": 8, "widths": [1, 2, 2]},
            "ShareRouting": {
                "search_epochs": 8,
                "num_experts": 3,
                "metric": "SparseCategoricalAccuracy",
            },
            "LearnedAllocation": {"search_epochs": 8, "allocation_learning_rate": 2e-2},
        },
        "quick": {
            "epochs": 1,
            "batch_size": 64,
            "learning_rate": 1e-3,
            "random_plans": 1,
            "run_eagerly": True,
            "routing_layers": 2,
            "routing_units": 16,
            "AffinityBranching": {"search_epochs": 1, "budget": "groups", "num_samples": 64},
            "LearnToBranch": {"search_epochs": 1, "widths": [1, 2, 2]},
            "ShareRouting": {
                "search_epochs": 1,
                "num_experts": 2,
                "warmup_epochs": 0,
                "metric": "SparseCategoricalAccuracy",
                "steps_per_update": 2,
            },
            "LearnedAllocation": {"search_epochs": 1},
        },
    },
    protocol=(
        "MultiMNIST as in Sener and Koltun 2018 (two digits, 36x36), with the six tasks of "
        "issue 13; 10,000 training, 2,000 validation and 5,000 test canvases. Share routing "
        "reads the flattened canvas (its gates read the input, which must be a vector)."
    ),
)


# Census-Income: the two MMoE task pairs.


def load_census(tasks):
    def load(quick):
        from keras_branching.datasets import census_income

        data = census_income(data_dir("census_kdd"), tasks=tasks, seed=0)
        if quick:
            sizes = {"train": 2000, "validation": 1000, "test": 1000}
            data = {
                k: (data[k][0][:n], {t: v[:n] for t, v in data[k][1].items()})
                for k, n in sizes.items()
            }
        return dict(data, groups=None)

    return load


def census_tasks(data):
    def tower():
        return keras.Sequential(
            [keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1, activation="sigmoid")]
        )

    return [Task(t, head=tower, loss="binary_crossentropy") for t in data["train"][1]]


def census_problem(name, tasks):
    return Problem(
        name=name,
        description=f"Census-Income (KDD), the MMoE pair {tasks}",
        metric="auc",
        load=load_census(tasks),
        tasks=census_tasks,
        blocks=lambda data: [dense(16), dense(8)],
        expert=dense,
        allocation_layers=lambda data: [[dense(16)] * 3, [dense(8)] * 3],
        settings={
            "full": {
                "epochs": 6,
                "batch_size": 512,
                "learning_rate": 1e-3,
                "random_plans": 5,
                "routing_layers": 2,
                "routing_units": 8,
                "AffinityBranching": {"search_epochs": 6, "budget": 0.5, "num_samples": 500},
                "LearnToBranch": {"search_epochs": 6, "widths": [1, 2]},
                "ShareRouting": {"search_epochs": 6, "num_experts": 4, "steps_per_update": 2},
                "LearnedAllocation": {"search_epochs": 6, "allocation_learning_rate": 2e-2},
            },
            "quick": {
                "epochs": 1,
                "batch_size": 256,
                "learning_rate": 1e-3,
                "random_plans": 1,
                "run_eagerly": True,
                "routing_layers": 2,
                "routing_units": 8,
                "AffinityBranching": {"search_epochs": 1, "budget": 0.5, "num_samples": 100},
                "LearnToBranch": {"search_epochs": 1, "widths": [1, 2]},
                "ShareRouting": {
                    "search_epochs": 1,
                    "num_experts": 2,
                    "warmup_epochs": 0,
                    "steps_per_update": 2,
                },
                "LearnedAllocation": {"search_epochs": 1},
            },
        },
        protocol=(
            "MMoE (Ma et al. 2018) trains on the 199,523 rows of census-income.data; here a "
            "fixed-seed 70/10/20 split of the 99,762 rows of census-income.test (the only "
            "file shipped), so the AUCs are not comparable with published ones. Towers "
            "Dense(8)+Dense(1) as in benchmarks/census_routing.py; no true grouping."
        ),
    )


CENSUS = census_problem("census", ("income", "marital"))
CENSUS_EDUCATION = census_problem("census_education", ("education", "marital"))


# Omniglot: 20 alphabets, one task each, per-task inputs.

OMNIGLOT_IMAGE_SIZE = {"full": 28, "quick": 16}


def load_omniglot(quick):
    from keras_branching.datasets import omniglot

    size = OMNIGLOT_IMAGE_SIZE["quick" if quick else "full"]
    data = omniglot(data_dir("omniglot"), num_alphabets=5 if quick else 20, image_size=size, seed=0)
    splits = {split: data.task_arrays(split) for split in ("train", "validation", "test")}
    names = [data.keras_names[t] for t in data.tasks]
    classes = {data.keras_names[t]: n for t, n in data.num_classes.items()}
    return dict(splits, groups=None, num_classes=classes, tasks=names)


def omniglot_tasks(data):
    return [
        Task(
            name,
            head=lambda n=data["num_classes"][name]: keras.layers.Dense(n),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        for name in data["tasks"]
    ]


def omniglot_blocks(filters=8, num_blocks=4, downsample=(0, 2), groups=4):
    """The tree network at the allocation network's size: `num_blocks` blocks of a
    3x3 convolution with `filters` filters, group normalisation and ReLU, stride 2
    at the blocks in `downsample`; the last one ends with flatten and dropout, as
    the allocation network does, so both take the same heads (one Dense)."""

    def block(strides, last):
        def make():
            layers = [
                keras.layers.Conv2D(filters, 3, strides=strides, padding="same"),
                keras.layers.GroupNormalization(groups),
                keras.layers.ReLU(),
            ]
            if last:
                layers += [keras.layers.Flatten(), keras.layers.Dropout(0.5)]
            return keras.Sequential(layers)

        return make

    return [
        block(2 if index in downsample else 1, index == num_blocks - 1)
        for index in range(num_blocks)
    ]


def omniglot_layers(filters=8, num_layers=4, downsample=(0, 2), groups=4):
    """The paper's component types at CPU size: a 1x1 stem, `num_layers` routed
    layers of 7 components (3x3, 5x5, 7x7 and 1x7-7x1 conv pairs, max and average
    pooling, identity), stride 2 at the layers in `downsample`; flatten, dropout."""

    def conv_pair(kernels, strides):
        def make():
            layers = []
            for i, kernel in enumerate(kernels):
                stride = strides if i == 1 else 1
                layers += [
                    keras.layers.Conv2D(filters, kernel, strides=stride, padding="same"),
                    keras.layers.GroupNormalization(groups),
                    keras.layers.ReLU(),
                ]
            return keras.Sequential(layers)

        return make

    def pool(layer, strides):
        return lambda: layer(3, strides=strides, padding="same")

    def identity(strides):
        if strides == 1:
            return keras.layers.Identity
        return lambda: keras.layers.Conv2D(filters, 1, strides=strides, padding="same")

    layers = [
        lambda: keras.layers.Conv2D(filters, 1, padding="same"),
        lambda: keras.layers.GroupNormalization(groups),
        keras.layers.ReLU,
    ]
    for index in range(num_layers):
        s = 2 if index in downsample else 1
        layers.append(
            [
                conv_pair((3, 3), s),
                conv_pair((5, 5), s),
                conv_pair((7, 7), s),
                conv_pair(((1, 7), (7, 1)), s),
                pool(keras.layers.MaxPooling2D, s),
                pool(keras.layers.AveragePooling2D, s),
                identity(s),
            ]
        )
        layers += [lambda: keras.layers.GroupNormalization(groups), keras.layers.ReLU]
    layers += [keras.layers.Flatten, lambda: keras.layers.Dropout(0.5)]
    return layers


NO_PER_TASK = (
    "each alphabet has its own images; the ShareRouting search takes one input shared by "
    "every task (it raises a ValueError for a builder with per-task inputs)"
)

OMNIGLOT = Problem(
    name="omniglot",
    description="Omniglot, 20 alphabets (one task each, own images), CPU protocol",
    metric="accuracy",
    load=load_omniglot,
    tasks=omniglot_tasks,
    blocks=lambda data: omniglot_blocks(),
    allocation_layers=lambda data: omniglot_layers(),
    per_task_inputs=True,
    settings={
        "full": {
            "epochs": 6,
            "steps_per_epoch": 100,
            "batch_size": 16,
            "learning_rate": 1e-3,
            "random_plans": 5,
            "AffinityBranching": {"search_epochs": 6, "budget": 0.5, "num_samples": 500},
            "LearnToBranch": {"search_epochs": 6, "widths": [1, 2, 4, 4]},
            "LearnedAllocation": {"search_epochs": 6, "allocation_learning_rate": 2e-2},
        },
        "quick": {
            "epochs": 1,
            "steps_per_epoch": 4,
            "batch_size": 8,
            "learning_rate": 1e-3,
            "random_plans": 1,
            "AffinityBranching": {"search_epochs": 1, "budget": 0.5, "num_samples": 40},
            "LearnToBranch": {"search_epochs": 1, "widths": [1, 2, 2, 2]},
            "LearnedAllocation": {"search_epochs": 1},
        },
    },
    skip={"ShareRouting": NO_PER_TASK},
    protocol=(
        "Paper (Maziarz et al. 2019, official code): 105x105 images, 48 filters, 8 routed "
        "layers of 7 components with 5 downsamplings, batch 16 per task, 8,000 steps, Adam "
        "1e-4 / 2e-3, about 100 PFLOP per network (benchmarks/omniglot_allocation.py keeps "
        "it for GPUs). Here: 28x28 images, 8 filters, 4 routed layers of the same 7 "
        "component types with 2 downsamplings (the heads see 7x7 maps), batch 16 per "
        "task, 600 steps, Adam 1e-3 / 2e-2. The trees: 4 blocks of one 3x3 convolution "
        "(8 filters, group norm, ReLU) with the same 2 downsamplings; the affinity is "
        "measured on 500 validation images pooled from all alphabets (25 each)."
    ),
)


PROBLEMS = {p.name: p for p in (SYNTHETIC, MULTI_MNIST, OMNIGLOT, CENSUS, CENSUS_EDUCATION)}
