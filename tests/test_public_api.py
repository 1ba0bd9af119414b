import subprocess
import sys

import keras_branching

# The public names other code depends on; change only on purpose.
EXPECTED = [
    "AffinityBranching",
    "AffinityBranchingResult",
    "AllocationBuilder",
    "AllocationMask",
    "AllocationModel",
    "BranchPoint",
    "BranchedModelBuilder",
    "BranchingTree",
    "GumbelRouter",
    "LearnToBranch",
    "RouterOptimizer",
    "RoutingModelBuilder",
    "RoutingPlan",
    "ShareRouting",
    "Task",
    "affinity",
    "build_supernet",
    "callbacks",
    "datasets",
    "derive_tree",
    "layers",
    "read_tree",
    "task_batches",
    "task_model",
    "tuning",
    "weighting",
]


def test_all_is_pinned():
    assert sorted(keras_branching.__all__) == sorted(EXPECTED)
    for name in keras_branching.__all__:
        assert getattr(keras_branching, name) is not None


def test_every_public_name_has_a_docstring():
    for name in keras_branching.__all__:
        assert getattr(keras_branching, name).__doc__, name


def test_tree_module_imports_without_tensorflow():
    path = keras_branching.tree.__file__
    code = (
        "import sys, importlib.util as u;"
        f"spec = u.spec_from_file_location('tree', {path!r});"
        "m = u.module_from_spec(spec); spec.loader.exec_module(m);"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
