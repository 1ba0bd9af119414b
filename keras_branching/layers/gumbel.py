"""The one Gumbel-softmax sampler that `GumbelRouter` and `AllocationMask` share."""

import keras
from keras import ops

# Keeps log(-log(u)) finite: u is drawn from [EPSILON, 1).
EPSILON = 1e-10


def gumbel_softmax(logits, temperature, seed_generator, hard=True, training=False):
    """A sample of a categorical over the last axis of `logits`, float32.

    At inference (`training` false) it is the one-hot of the argmax of the
    logits: deterministic, so exported models serve the same answer every
    time. In training it is softmax((logits + Gumbel noise) / temperature);
    with `hard`, the forward pass is the one-hot of that sample and the
    gradient is the soft sample's (straight-through). Ties go to the first
    index in both modes.

    Args:
        logits: float tensor `(..., K)`.
        temperature: scalar tensor or float > 0 (clipped at `EPSILON`).
        seed_generator: a `keras.random.SeedGenerator`.
        hard: one-hot forward pass with straight-through gradients.
        training: whether to sample.
    """
    logits = ops.cast(logits, "float32")
    num_choices = ops.shape(logits)[-1]
    if not training:
        return ops.one_hot(ops.argmax(logits, axis=-1), num_choices, dtype="float32")
    uniform = keras.random.uniform(
        ops.shape(logits), minval=EPSILON, maxval=1.0, dtype="float32", seed=seed_generator
    )
    gumbel = -ops.log(-ops.log(uniform))
    tau = ops.maximum(ops.cast(temperature, "float32"), EPSILON)
    soft = ops.softmax((logits + gumbel) / tau, axis=-1)
    if not hard:
        return soft
    one_hot = ops.one_hot(ops.argmax(soft, axis=-1), num_choices, dtype="float32")
    # Forward: exactly `one_hot`. Backward: the gradient of `soft`.
    return one_hot + (soft - ops.stop_gradient(soft))
