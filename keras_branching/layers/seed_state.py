"""`SeedStateSaving`: a sampling layer saves its seed generator's state with its weights."""

from keras import ops

SEED_STATE_KEY = "seed_generator_state"


class SeedStateSaving:
    """Mixin for a layer whose `self.seed_generator` draws training noise.

    Keras saves a layer's own variables but not its seed generator's state,
    so a network reloaded in the middle of training would draw different
    noise than an uninterrupted run. With this mixin (listed before
    `keras.layers.Layer`) the state is saved under `SEED_STATE_KEY` next to
    the weights and restored when present (files written before it was
    saved still load).
    """

    def save_own_variables(self, store):
        super().save_own_variables(store)
        store[SEED_STATE_KEY] = ops.convert_to_numpy(self.seed_generator.state)

    def load_own_variables(self, store):
        variables = self._trainable_variables + self._non_trainable_variables
        keys = [k for k in store.keys() if k != SEED_STATE_KEY]
        if len(keys) != len(variables):
            raise ValueError(
                f"Layer {self.name!r} expected {len(variables)} variables, but received "
                f"{len(keys)} variables during loading."
            )
        for i, variable in enumerate(variables):
            variable.assign(store[str(i)])
        if SEED_STATE_KEY in store.keys():
            self.seed_generator.state.assign(store[SEED_STATE_KEY])
