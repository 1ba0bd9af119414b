"""The benchmark suite's smoke test: `benchmarks/suite.py synthetic --quick` end to end."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("AffinityBranching", "LearnToBranch", "ShareRouting", "LearnedAllocation")


def test_quick_synthetic_suite_writes_json_markdown_and_plot(tmp_path):
    out = tmp_path / "results"
    completed = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "suite.py"),
            "synthetic",
            "--quick",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "[" in completed.stdout and "s] seed 0 shared" in completed.stdout  # progress lines

    results = json.loads((out / "results.json").read_text())
    assert results["problem"] == "synthetic" and results["quick"] and results["seeds"] == [0]
    assert results["methods"] == list(METHODS) and results["skipped"] == {}
    labels = [row["label"] for row in results["summary"]]
    expected = [
        "shared",
        "independent",
        "shared (allocation network)",
        "independent (allocation network)",
        "MMoE",
        "shared-bottom",
    ]
    expected += list(METHODS) + [f"random at {m} size" for m in METHODS]
    assert sorted(labels) == sorted(expected)
    tasks = ["g0_t0", "g0_t1", "g1_t0", "g1_t1", "g2_t0", "g2_t1"]
    for row in results["summary"]:
        assert sorted(row["test"]) == tasks
        assert row["params"] > 0 and row["recovered"] in ("0/1", "1/1")
        if row["kind"] == "searched":
            assert row["cost_ratio"] > 0 and row["beats_random_median"] in ("0/1", "1/1")
            assert row["search_s"] > 0
    searched = {r["label"]: r for r in results["runs"] if r["kind"] == "searched"}
    assert searched["LearnedAllocation"]["train_s"] == 0  # evaluated as trained
    for method in METHODS:  # random plans at the searched plan's size
        size = searched[method]["params"]
        randoms = [r for r in results["runs"] if r["label"] == f"random at {method} size"]
        assert randoms and all(abs(r["params"] - size) <= 0.5 * size for r in randoms)
    assert results["pareto_front"] and set(results["pareto_front"]) <= set(labels)

    table = (out / "results.md").read_text()
    for label in expected:
        assert f"| {label} |" in table
    assert "| model | runs | params |" in table
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
