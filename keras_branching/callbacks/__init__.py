"""Training callbacks of keras_branching."""

from keras_branching.callbacks.temperature import TemperatureSchedule, find_temperature_variables

__all__ = ["TemperatureSchedule", "find_temperature_variables"]
