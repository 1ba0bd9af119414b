"""`TaskModel`: the functional model every builder returns."""

import keras

from keras_branching import data_checks


@keras.saving.register_keras_serializable(package="keras_branching")
class TaskModel(keras.Model):
    """A functional Keras model with one named output per task.

    Every builder returns one. It is a plain functional model (construct it
    as `TaskModel(inputs, outputs)`; save, reload, export and serve it as
    any other), except that `fit` checks its data first
    (`keras_branching.data_checks.check_data`): `y` keyed by exactly the
    task names, `x` (every input, per-task inputs included), every `y` and
    the sample weights of one length, at least one example, finite values;
    `validation_data` the same way; a `tf.data.Dataset` on its element
    structure and first batch.

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

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, after checking the data.

        Raises:
            keras_branching.data_checks.DataError: for data that cannot be
                trained on (see `keras_branching.data_checks.check_data`).
        """
        data_checks.check_fit_call(self.task_names, args, kwargs)
        return super().fit(*args, **kwargs)
