"""The Python blocks of `docs/distributed.md` run, in order, on two logical CPUs.

The page's first block splits the CPU into two logical devices, which
TensorFlow allows only before it runs its first op, so the blocks run as
one script in a fresh process (in a temporary directory, where the page
saves its models). A block right after a `<!-- not run: ... -->` comment
(the TPU setup) is left out.
"""

import os
import re

import keras
import pytest

from tests.fresh_process import REPO, run_python

_PAGE = os.path.join(REPO, "docs", "distributed.md")
# The models the page builds in the scope (names of its variables).
_TRAINED = (
    "model",
    "resumed",
    "weighted",
    "search.model",
    "retrained",
    "supernet",
    "routed",
    "mmoe",
    "learned.model",
    "allocated",
    "affinity.model",
    "chosen",
)
_BLOCK = re.compile(r"(<!-- not run[^>]*-->\s*\n)?```python\n(.*?)```", re.DOTALL)


def page_blocks():
    """The page's Python blocks, as `(code, runs)` pairs in page order."""
    with open(_PAGE, encoding="utf-8") as f:
        text = f.read()
    return [(match.group(2), match.group(1) is None) for match in _BLOCK.finditer(text)]


def test_page_has_the_tested_example():
    blocks = page_blocks()
    run = [code for code, runs in blocks if runs]
    assert len(run) >= 8, "most blocks of the page should run"
    assert "set_logical_device_configuration" in run[0]  # before keras_branching
    script = "\n".join(run)
    for needle in ("MirroredStrategy()", "strategy.scope()", "load_model", "saved_model.load"):
        assert needle in script
    assert not any("TPUStrategy" in code for code in run)


def test_page_has_the_several_hosts_example():
    # Run on JAX and several processes by `tests/distributed_jax`, which
    # trains the same way; here it must at least compile and use the names
    # Keras reads (the environment variables of its command lines too).
    with open(_PAGE, encoding="utf-8") as f:
        text = f.read()
    blocks = [code for code, runs in page_blocks() if "keras.distribution.initialize" in code]
    assert len(blocks) == 1 and blocks[0] not in [c for c, runs in page_blocks() if runs]
    compile(blocks[0], "several_hosts.py", "exec")
    for needle in ("DataParallel(", "seed=0", "distributed.is_chief()", "set_random_seed"):
        assert needle in blocks[0], needle
    for variable in ("JOB_ADDRESSES", "NUM_PROCESSES", "PROCESS_ID"):
        assert text.count(f"KERAS_DISTRIBUTION_{variable}=") == 2, variable
    assert text.count("KERAS_BACKEND=jax") >= 2


@pytest.mark.slow
@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="tf.distribute is TensorFlow only"
)
def test_page_runs_on_two_logical_cpus(tmp_path):
    script = "\n\n".join(code for code, runs in page_blocks() if runs)
    # Every model the page trains in the scope did train on both replicas.
    script += "\nassert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync\n"
    for name in _TRAINED:
        script += f"assert {name}.distribute_strategy.num_replicas_in_sync == 2, {name!r}\n"
    path = tmp_path / "distributed_page.py"
    path.write_text(script, encoding="utf-8")
    run_python(path, cwd=tmp_path)
