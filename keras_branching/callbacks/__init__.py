"""Training callbacks of keras_branching."""

from keras_branching.callbacks.architecture_logger import (
    ArchitectureLogger,
    find_architecture_layers,
)
from keras_branching.callbacks.temperature import TemperatureSchedule, find_temperature_variables

__all__ = [
    "ArchitectureLogger",
    "TemperatureSchedule",
    "find_architecture_layers",
    "find_temperature_variables",
]
