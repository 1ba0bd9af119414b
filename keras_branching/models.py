"""`TaskModel`: the functional model every builder returns."""

import keras

from keras_branching import data_checks


@keras.saving.register_keras_serializable(package="keras_branching")
class TaskModel(keras.Model):
    """A functional Keras model with one named output per task.

    Every builder returns one. It is a plain functional model (construct it
    as `TaskModel(inputs, outputs)`; save, reload, export and serve it as
    any other), except that `fit` checks its data first: `y` keyed by exactly
    the task names, `x` and every `y` of one length, at least one example.
    See `keras_branching.data_checks`.

    Example:

    >>> import keras, numpy as np
    >>> inputs = keras.Input((3,))
    >>> model = TaskModel(inputs, {"a": keras.layers.Dense(1)(inputs)})
    >>> model.compile("sgd", {"a": "mse"})
    >>> model.fit(np.ones((4, 3)), {"b": np.ones((4, 1))}, verbose=0)
    Traceback (most recent call last):
    ...
    keras_branching.data_checks.DataError: Expected `y` keyed by exactly the task names [...]
    """

    @property
    def task_names(self):
        """The task names: the keys of the model's output dict."""
        outputs = self.output
        if isinstance(outputs, dict):
            return list(outputs)
        return list(self.output_names)

    def fit(self, x=None, y=None, *args, **kwargs):
        if y is not None and not _is_dataset(x):
            data_checks.check_arrays(x, y, self.task_names)
        return super().fit(x, y, *args, **kwargs)


def _is_dataset(x):
    return type(x).__module__.startswith(("tensorflow", "torch", "keras"))
