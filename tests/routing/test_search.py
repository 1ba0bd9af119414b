import keras
import numpy as np
import pytest

from keras_branching.routing.plan import RoutingPlan
from keras_branching.routing.search import ShareRouting, SupernetRoute, auc
from keras_branching.task import Task
from tests.layer_checks import check_layer


def _grouped_tasks(seed, num_examples=2000, tasks_per_group=2, relatedness=0.97, dim=16):
    """Binary tasks in two groups: related inside a group, unrelated across.

    Like `synthetic_tasks` (orthogonal directions per group, task weights
    `p u + sqrt(1 - p^2) v`), with targets `1[w.x > 0]` so that a one-unit
    sub-network can learn a task and AUC is the reward.
    """
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, 2 + 2 * tasks_per_group)))
    x = rng.standard_normal((num_examples, dim)).astype("float32")
    y, groups = {}, []
    for g in range(2):
        names = []
        for k in range(tasks_per_group):
            own = q[:, 2 + g * tasks_per_group + k]
            w = relatedness * q[:, g] + np.sqrt(1 - relatedness**2) * own
            y[f"g{g}_t{k}"] = (x @ w > 0).astype("float32")[:, None]
            names.append(f"g{g}_t{k}")
        groups.append(names)
    return x, y, groups


def _tasks(names):
    return [
        Task(
            t,
            head=lambda: keras.layers.Dense(1, activation="sigmoid"),
            loss="binary_crossentropy",
        )
        for t in names
    ]


def _disjoint(plan, groups):
    first = set().union(*(plan.used_by(t) for t in groups[0]))
    second = set().union(*(plan.used_by(t) for t in groups[1]))
    return not first & second


def _search(seed, **overrides):
    x, y, groups = _grouped_tasks(seed)
    settings = dict(
        num_experts=3,
        max_route_size=1,
        optimizer=keras.optimizers.Adam(0.01),
        seed=seed,
    )
    settings.update(overrides)
    search = ShareRouting(
        (x.shape[1],),
        [lambda: keras.layers.Dense(1, activation="relu")],
        _tasks(y),
        **settings,
    )
    split = 1600
    train = (x[:split], {t: v[:split] for t, v in y.items()})
    validation = (x[split:], {t: v[split:] for t, v in y.items()})
    return search, groups, train, validation


def test_unrelated_groups_are_routed_apart_more_often_than_chance():
    seeds = range(4)
    found, chance = [], None
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        search, groups, train, validation = _search(seed)
        if chance is None:  # uniform plans of this search space
            rng = np.random.default_rng(123)
            chance = np.mean([_disjoint(search.sample_plan(rng), groups) for _ in range(4000)])
        plan = search.search(
            *train,
            validation,
            epochs=12,
            batch_size=100,
            warmup_epochs=2,
            steps_per_update=2,
            samples_per_update=4,
            validation_batch_size=400,
        )
        found.append(_disjoint(plan, groups))
    # Chance is about 0.21; a search no better than chance finds 3 of 4 with
    # probability about 0.03.
    assert 0.15 < chance < 0.3
    assert sum(found) >= 3, (found, chance)


def test_supernet_route_layer_checks(tmp_path):
    check_layer(lambda: SupernetRoute(3, 2), [(5,), (4,)] + [(2,)] * 3, tmp_path, multi_input=True)


def test_supernet_route_masks_select_members():
    layer = SupernetRoute(3, 1)
    query = np.ones((2, 4), "float32")
    members = [np.full((2, 2), float(i), "float32") for i in range(3)]
    layer([query, *members])
    layer.set_choice(route=(1,), query=0)
    np.testing.assert_allclose(np.asarray(layer([query, *members])), 1.0)
    layer.set_choice(route=(0, 2), query=0)
    np.testing.assert_allclose(np.asarray(layer([query, *members])), 1.0)  # mean of 0 and 2


def test_auc_matches_pair_counting():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.standard_normal(200), 1)  # with ties
    pos, neg = s[y == 1], s[y == 0]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    np.testing.assert_allclose(auc(y, s), pairs)
    assert np.isnan(auc(np.ones(5), np.arange(5)))


def test_search_space_and_plan_extraction():
    search, _, _, _ = _search(0, num_experts=3, max_route_size=None, queries="all")
    names = [f"tower_g{g}_t{k}" for g in range(2) for k in range(2)]
    assert sorted(search.choices) == sorted(names)
    # 3 singletons (no gate) + 3 pairs and 1 triple, each with 4 queries.
    assert len(search.choices["tower_g0_t0"]) == 3 + 4 * 4
    for name in names:
        search.logits[name][search.choices[name].index(((0, 2), 1))] = 5.0
    plan = search.most_probable_plan()
    assert plan.tower("g1_t1") == ((0, 2), 1)
    assert isinstance(plan, RoutingPlan)


def test_build_exports_without_search_state(tmp_path):
    import tensorflow as tf

    search, _, train, validation = _search(1)
    with pytest.raises(RuntimeError, match="call `search"):
        search.build()
    search.search(*train, validation, epochs=2, batch_size=400, steps_per_update=1)
    assert len(search.history) == 2
    model = search.build()
    assert not any(isinstance(layer, SupernetRoute) for layer in model.layers)
    assert all("mask" not in v.path for v in model.variables)
    assert model.count_params() < search.supernet.count_params()
    x = validation[0][:8]
    expected = model.predict(x, verbose=0)
    model.export(str(tmp_path / "plan"), format="tf_saved_model", verbose=False)
    served = tf.saved_model.load(str(tmp_path / "plan"))
    out = served.serve(x)
    for t, value in expected.items():
        np.testing.assert_allclose(np.asarray(out[t]), value, rtol=1e-5, atol=1e-6)


def test_rejects_bad_settings():
    with pytest.raises(ValueError, match="queries='first'"):
        _search(0, queries="first")
    with pytest.raises(ValueError, match="num_experts=0"):
        _search(0, num_experts=0)
    with pytest.raises(ValueError, match="credit='none'"):
        _search(0, credit="none")
    with pytest.raises(ValueError, match="baseline_decay=1"):
        _search(0, baseline_decay=1)
    with pytest.raises(ValueError, match="more than 4096"):
        _search(0, num_experts=13, max_route_size=None)


def test_rejects_bad_data():
    search, _, (x, y), validation = _search(0)
    with pytest.raises(ValueError, match="keyed by the tasks"):
        search.search(x, {"g0_t0": y["g0_t0"]}, validation)
    with pytest.raises(ValueError, match="warmup_epochs"):
        search.search(x, y, validation, epochs=2, warmup_epochs=2)
    constant = {t: np.zeros_like(v) for t, v in validation[1].items()}
    with pytest.raises(ValueError, match="not finite"):
        search.search(x, y, (validation[0], constant), epochs=2, batch_size=800, steps_per_update=1)
