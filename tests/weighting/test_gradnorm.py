import keras
import numpy as np
import pytest

from keras_branching import BranchingTree
from keras_branching.weighting.gradnorm import GradNorm
from keras_branching.weighting.model import WeightedModel
from tests.weighting.helpers import make_builder, regression_data

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="GradNorm is TensorFlow only"
)


def test_task_with_larger_gradients_is_weighted_down():
    builder = make_builder(learning_rate=0.01)
    # Same signal, but task b's targets (and so its gradients) are 10x larger.
    x, y = regression_data(scale=(1.0, 10.0))
    weighted = WeightedModel(
        builder.build(builder.shared_tree(), compile=False),
        GradNorm(builder.task_names, alpha=1.5, learning_rate=0.05),
    )
    builder.compile(weighted)
    weighted.fit(x, y, batch_size=64, epochs=3, verbose=0)
    weights = weighted.weighting.weights_dict()
    assert weights["a"] > 1.0 > weights["b"], weights
    assert sum(weights.values()) == pytest.approx(2.0, rel=1e-5)


def test_slower_task_is_weighted_up():
    weighting = GradNorm(["a", "b"], alpha=1.0, learning_rate=0.1)
    norms = keras.ops.convert_to_tensor([1.0, 1.0])
    weighting.update_from_gradients(keras.ops.convert_to_tensor([2.0, 2.0]), norms)
    # Equal norms and losses on the first step: targets are met, nothing moves much.
    np.testing.assert_allclose(list(weighting.weights_dict().values()), [1.0, 1.0], atol=0.11)
    weighting.weight_variable.assign([1.0, 1.0])
    # Task a's loss halved, b's did not: b trains slower and gains weight.
    weighting.update_from_gradients(keras.ops.convert_to_tensor([1.0, 2.0]), norms)
    weights = weighting.weights_dict()
    assert weights["b"] > 1.0 > weights["a"]


def test_update_rule_and_absent_task():
    weighting = GradNorm(["a", "b", "c"], alpha=1.0, learning_rate=0.1)
    present = keras.ops.convert_to_tensor([1.0, 1.0, 0.0])
    norms = keras.ops.convert_to_tensor([1.0, 1.0, 0.0])
    # First step: the initial losses of the present tasks are recorded.
    weighting.update_from_gradients(keras.ops.convert_to_tensor([2.0, 2.0, 0.0]), norms, present)
    np.testing.assert_allclose(list(weighting.weights_dict().values()), [1.0, 1.0, 1.0])
    # a's loss halved, b's did not: relative rates 2/3 and 4/3, targets under and
    # over the equal norms, so a steps down and b up by learning_rate * 1.
    weighting.update_from_gradients(keras.ops.convert_to_tensor([1.0, 2.0, 0.0]), norms, present)
    np.testing.assert_allclose(list(weighting.weights_dict().values()), [0.9, 1.1, 1.0], rtol=1e-6)
    initial = keras.ops.convert_to_numpy(weighting.initial_losses)
    assert initial.tolist() == [2.0, 2.0, 0.0]  # c's waits for its first label


def test_needs_a_shared_layer():
    builder = make_builder()
    weighted = WeightedModel(
        builder.build(builder.independent_tree(), compile=False), GradNorm(builder.task_names)
    )
    builder.compile(weighted)
    x, y = regression_data(num_examples=8)
    with pytest.raises(ValueError, match="shared_layer"):
        weighted.fit(x, y, verbose=0)


def test_named_shared_layer():
    builder = make_builder()
    model = builder.build(builder.independent_tree(), compile=False, fuse=False)
    weighting = GradNorm(builder.task_names, shared_layer="block1_a")
    assert weighting.shared_variables(model) == model.get_layer("block1_a").trainable_variables
    with pytest.raises(ValueError, match="not a layer"):
        GradNorm(builder.task_names, shared_layer="nope").shared_variables(model)


def test_config_round_trip():
    weighting = GradNorm(["a", "b"], alpha=0.5, learning_rate=0.1, shared_layer="x")
    assert GradNorm.from_config(weighting.get_config()).get_config() == weighting.get_config()


@pytest.mark.parametrize("name", ["alpha", "learning_rate"])
@pytest.mark.parametrize("value", [0, -1.0, float("inf")])
def test_rejects_bad_arguments(name, value):
    with pytest.raises(ValueError, match=f"Expected `{name}` > 0. Received: {name}="):
        GradNorm(["a", "b"], **{name: value})


def test_fused_model_balances_its_single_group_stacked_block():
    # Fused: every task passes through every StackedBlock, but only a block
    # depth of one group is shared.
    builder = make_builder()
    names = builder.task_names
    tree = BranchingTree(names, [[names]] + [[[t] for t in names]] * (builder.num_blocks - 1))
    model = builder.build(tree, compile=False, fuse=True)
    chosen = GradNorm(names).shared_variables(model)
    shared = [
        layer
        for layer in model.layers
        if layer.trainable_weights and getattr(layer, "num_groups", 0) == 1
    ]
    assert len(shared) == 1 and chosen == shared[0].trainable_variables
