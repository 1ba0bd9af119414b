"""Which process this is, for training on several hosts with `keras.distribution`.

On the JAX backend, `keras.distribution.initialize(...)` starts
`jax.distributed`, and every process (one per host, usually) runs the same
program: it builds the same model, trains it under
`keras.distribution.DataParallel` on its share of every global batch, and
holds the same weights after every step. Whatever a search decides is then
the same on every process, as long as every search is given a `seed`
(`Search.search` raises a `ValueError` under several processes without
one). Files are written by process 0 only, the *chief*: the library skips
its own writes on the other processes (the search state next to a
`BackupAndRestore` backup, plots saved to a path, the CLI's export), and
your code can do the same with `is_chief()`. See `docs/distributed.md`.

On the TensorFlow backend, and before `keras.distribution.initialize`,
there is one process: `process_index()` is 0, `num_processes()` is 1 and
`is_chief()` is True.
"""

import sys

import keras


def _jax():
    """The `jax` module when the JAX backend is in use (and imported), else None."""
    if keras.backend.backend() != "jax":
        return None
    return sys.modules.get("jax")


def num_processes():
    """The number of processes training together (1 without `jax.distributed`).

    Returns:
        `jax.process_count()` on the JAX backend, else 1.

    Example:

    >>> num_processes()
    1
    """
    jax = _jax()
    return 1 if jax is None else int(jax.process_count())


def process_index():
    """This process's index, from 0 to `num_processes() - 1`.

    Returns:
        `jax.process_index()` on the JAX backend, else 0.

    Example:

    >>> process_index()
    0
    """
    jax = _jax()
    return 0 if jax is None else int(jax.process_index())


def is_chief():
    """Whether this process writes files: process 0, or the only process.

    Under `keras.distribution` on several processes every process holds the
    same weights and the same plans, so one writes them. Guard your own
    saves with it, for example `if is_chief(): model.save(path)`.

    Returns:
        True on process 0 and whenever there is one process (the
        TensorFlow backend included).

    Example:

    >>> is_chief()
    True
    """
    return process_index() == 0
