import glob
import os

import keras
import matplotlib
import numpy as np
import pytest

from keras_branching.builder import BranchedModelBuilder
from keras_branching.callbacks.architecture_logger import (
    ArchitectureLogger,
    find_architecture_layers,
)
from keras_branching.datasets.synthetic import synthetic_tasks
from keras_branching.layers.allocation_mask import AllocationMask
from keras_branching.layers.gumbel_router import GumbelRouter
from keras_branching.learn_to_branch import build_supernet
from keras_branching.task import Task

matplotlib.use("Agg")


def _supernet(num_groups=2, tasks_per_group=2, widths=(1, 2, 4), seed=0):
    keras.utils.set_random_seed(seed)
    x, y, _ = synthetic_tasks(num_groups, tasks_per_group, num_examples=64, input_dim=8, seed=seed)
    builder = BranchedModelBuilder(
        (8,),
        [lambda: keras.layers.Dense(4, activation="relu")] * len(widths),
        [Task(name, lambda: keras.layers.Dense(1), "mse") for name in y],
    )
    return build_supernet(builder, list(widths), seed=seed), x, y


def test_records_router_probabilities_each_epoch(tmp_path):
    model, x, y = _supernet()
    logger = ArchitectureLogger(log_dir=str(tmp_path))
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[logger])
    assert sorted(logger.history) == ["router_block2", "router_block3"]
    assert [m.shape for m in logger.history["router_block2"]] == [(2, 1), (2, 1)]
    assert [m.shape for m in logger.history["router_block3"]] == [(4, 2), (4, 2)]
    assert logger.epochs == [1, 2]
    last = logger.history["router_block3"][-1]
    np.testing.assert_allclose(last.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(last, model.get_layer("router_block3").parent_probabilities())
    # The logits move during training, so the two records differ.
    first, second = logger.history["router_block3"]
    assert not np.allclose(first, second)
    # A second fit continues the epochs.
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[logger])
    assert logger.epochs == [1, 2, 3] and len(logger.history["router_block3"]) == 3


def test_writes_tensorboard_scalars_and_images(tmp_path):
    tf = pytest.importorskip("tensorflow")
    model, x, y = _supernet()
    logger = ArchitectureLogger(log_dir=str(tmp_path))
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[logger])
    files = glob.glob(os.path.join(tmp_path, "architecture", "events.out.tfevents.*"))
    assert len(files) == 1
    tags, steps = set(), set()
    for record in tf.compat.v1.train.summary_iterator(files[0]):
        for value in record.summary.value:
            tags.add(value.tag)
            steps.add(record.step)
    assert "router_block3/child_3_parent_1" in tags
    assert "router_block2/child_1_parent_0" in tags
    assert "router_block3/matrix" in tags
    assert steps == {1, 2}


def test_allocation_masks_and_nested_models():
    inputs = [keras.Input((2, 3)), keras.Input((2, 3))]
    mask = AllocationMask(2, 2, initial_probability=0.7, name="mask")
    inner = keras.Model(inputs, mask(inputs), name="inner")
    outer_inputs = [keras.Input((2, 3)), keras.Input((2, 3))]
    outputs = [keras.layers.Dense(1)(t) for t in inner(outer_inputs)]
    model = keras.Model(outer_inputs, outputs)
    model.compile("sgd", ["mse", "mse"])
    assert find_architecture_layers(model) == [mask]
    logger = ArchitectureLogger()
    data = [np.ones((8, 2, 3), "float32")] * 2
    model.fit(data, [np.ones((8, 1))] * 2, epochs=2, verbose=0, callbacks=[logger])
    assert list(logger.history) == ["mask"]
    assert [m.shape for m in logger.history["mask"]] == [(2, 2), (2, 2)]
    np.testing.assert_allclose(logger.history["mask"][-1], mask.probabilities())
    # Few entries: one line each, and the 0.5 above which a component is used.
    lines = logger.plot().axes[0].get_lines()
    assert len(lines) == 5 and lines[-1].get_label() == "used above"
    assert lines[-1].get_ydata()[0] == 0.5
    matplotlib.pyplot.close("all")


def test_plot_of_a_large_allocation_follows_each_task_s_share():
    inputs = [keras.Input((3, 2)) for _ in range(5)]
    mask = AllocationMask(5, 3, initial_probability=0.7, name="mask")
    outputs = [keras.layers.Dense(1)(t) for t in mask(inputs)]
    model = keras.Model(inputs, outputs)
    model.compile("sgd", ["mse"] * 5)
    logger = ArchitectureLogger()
    data = [np.ones((8, 3, 2), "float32")] * 5
    model.fit(data, [np.ones((8, 1))] * 5, epochs=2, verbose=0, callbacks=[logger])
    ax = logger.plot().axes[0]
    assert ax.get_title() == "mask: expected share of the components each task uses"
    # 15 entries: one line per task at its row's mean; no reference line, since
    # the entries are independent probabilities.
    shares = np.stack(logger.history["mask"]).mean(axis=2)
    assert len(ax.get_lines()) == 5
    for task, line in enumerate(ax.get_lines()):
        np.testing.assert_allclose(line.get_ydata(), shares[:, task], rtol=1e-6)
    matplotlib.pyplot.close("all")


def test_plot_returns_a_figure(tmp_path):
    model, x, y = _supernet()
    logger = ArchitectureLogger()
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[logger])
    fig = logger.plot(path=str(tmp_path / "all.png"))
    assert isinstance(fig, matplotlib.figure.Figure)
    assert len(fig.axes) >= 4  # two layers, lines and heat map each
    assert (tmp_path / "all.png").stat().st_size > 1000
    one = logger.plot("router_block3")
    assert one.axes[0].get_title().startswith("router_block3")
    with pytest.raises(ValueError, match="layer_name='nope'"):
        logger.plot("nope")
    matplotlib.pyplot.close("all")


def test_errors():
    with pytest.raises(ValueError, match="Nothing recorded"):
        ArchitectureLogger().plot()
    with pytest.raises(TypeError, match="log_dir=3"):
        ArchitectureLogger(log_dir=3)
    with pytest.raises(TypeError, match="layer_names='router'"):
        ArchitectureLogger(layer_names="router")
    model, x, y = _supernet()
    logger = ArchitectureLogger(layer_names=["router_block9"])
    with pytest.raises(ValueError, match="router_block9"):
        model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[logger])


def test_layer_names_selects():
    model, x, y = _supernet()
    logger = ArchitectureLogger(layer_names=["router_block3"])
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[logger])
    assert list(logger.history) == ["router_block3"]


def test_same_name_in_two_nested_models_is_kept_apart():
    def inner(name):
        parents = [keras.Input((2,)), keras.Input((2,))]
        return keras.Model(parents, GumbelRouter(2, seed=0, name="router")(parents), name=name)

    inputs = keras.Input((3,))
    parents = [keras.layers.Dense(2)(inputs), keras.layers.Dense(2)(inputs)]
    children = inner("second")(inner("first")(parents))
    model = keras.Model(inputs, keras.layers.Concatenate()(children))
    model.compile("sgd", "mse")
    logger = ArchitectureLogger()
    model.fit(np.zeros((8, 3)), np.zeros((8, 4)), epochs=1, verbose=0, callbacks=[logger])
    assert sorted(logger.history) == ["router", "router_2"]
