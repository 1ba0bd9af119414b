import subprocess
import sys

import keras_branching

# The public names other code depends on; change only on purpose.
EXPECTED = [
    "AffinityBranching",
    "Allocation",
    "AllocationBuilder",
    "AllocationMask",
    "BranchPoint",
    "BranchedModelBuilder",
    "BranchingTree",
    "DataError",
    "GatedRoute",
    "GumbelRouter",
    "LearnToBranch",
    "LearnedAllocation",
    "RoutingModelBuilder",
    "RoutingPlan",
    "Search",
    "SearchResult",
    "ShareRouting",
    "SupernetRoute",
    "Task",
    "affinity",
    "allocation",
    "callbacks",
    "datasets",
    "distributed",
    "evaluation",
    "fusion",
    "layers",
    "learn_to_branch",
    "naming",
    "optimizers",
    "read_tree",
    "routing",
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


def test_every_search_has_one_shape():
    """The four searches share the base, the call and the builder protocol."""
    import inspect

    searches = {
        keras_branching.AffinityBranching: keras_branching.BranchedModelBuilder,
        keras_branching.LearnToBranch: keras_branching.BranchedModelBuilder,
        keras_branching.ShareRouting: keras_branching.RoutingModelBuilder,
        keras_branching.LearnedAllocation: keras_branching.AllocationBuilder,
    }
    for search, builder in searches.items():
        assert issubclass(search, keras_branching.Search)
        assert search.builder_class is builder
        assert list(inspect.signature(search.__init__).parameters)[1] == "builder"
        assert "seed" in inspect.signature(search.__init__).parameters
        for method in ("build", "count_params"):
            assert list(inspect.signature(getattr(builder, method)).parameters)[1] == "plan"
