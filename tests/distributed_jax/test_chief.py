"""Several processes, simulated in this one: seeds are required and only process 0 writes.

`keras_branching.distributed` is patched to say this is process 1 of 2,
so these run on any backend without starting processes.
"""

import os

import keras
import numpy as np
import pytest

import keras_branching as kb
from keras_branching import distributed
from keras_branching.plotting import plot_tree
from keras_branching.search import STATE_FILE, _SearchStateBackup


def test_one_process_by_default():
    assert (distributed.num_processes(), distributed.process_index()) == (1, 0)
    assert distributed.is_chief()


@pytest.fixture
def second_process(monkeypatch):
    monkeypatch.setattr(distributed, "num_processes", lambda: 2)
    monkeypatch.setattr(distributed, "process_index", lambda: 1)


def _builder(names=("a", "b")):
    return kb.BranchedModelBuilder(
        inputs=(4,),
        blocks=[lambda: keras.layers.Dense(8)] * 2,
        tasks=[kb.Task(n, head=lambda: keras.layers.Dense(1), loss="mse") for n in names],
    )


def _data(names=("a", "b")):
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    return x, {n: x[:, :1] for n in names}


@pytest.mark.usefixtures("second_process")
def test_search_without_seed_is_refused_under_several_processes():
    assert not distributed.is_chief()
    search = kb.LearnToBranch(_builder(), widths=[2, 2])
    with pytest.raises(ValueError, match=r"LearnToBranch runs on 2 processes.*seed=None"):
        search.search(*_data(), epochs=1, verbose=0)
    assert search.model is None  # refused before building anything


@pytest.mark.usefixtures("second_process")
def test_only_process_zero_writes(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "tree.png"
    plot_tree(kb.BranchingTree.shared(["a", "b"], 2), path=str(path))
    backup = _SearchStateBackup(str(tmp_path))
    backup.set_model(_builder().build(_builder().shared_tree()))
    backup.on_epoch_end(0, {"loss": 1.0})
    assert backup.history == {"loss": [1.0]}  # recorded, not written
    assert os.listdir(tmp_path) == []
    assert not os.path.exists(tmp_path / STATE_FILE)
