"""Keeping TensorFlow's start-up logs out of the way.

TensorFlow prints C++ log lines (oneDNN, CUDA stubs, CPU features) while it
is imported, before `TF_CPP_MIN_LOG_LEVEL` can filter them. When that
variable asks for quiet logs (2 or 3, our default 2), the package silences
the process's stderr for the duration of the first TensorFlow import.
Set `TF_CPP_MIN_LOG_LEVEL=0` to see every line.
"""

import contextlib
import os
import sys


@contextlib.contextmanager
def quiet_stderr():
    """Silences file descriptor 2 (C-level stderr) inside the block."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr: nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


def import_keras_quietly():
    """Imports keras (and TensorFlow, when it is the backend) without start-up noise."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    quiet = os.environ["TF_CPP_MIN_LOG_LEVEL"] in ("2", "3") and "tensorflow" not in sys.modules
    with quiet_stderr() if quiet else contextlib.nullcontext():
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            # Listing the devices prints the remaining start-up lines (CUDA
            # probing) without starting the runtime, so device settings
            # (logical devices, memory growth) can still be made afterwards.
            tf.config.list_physical_devices()
