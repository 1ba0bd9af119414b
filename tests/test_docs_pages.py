"""The Python blocks of the protocol pages run, in page order, as a user would paste them.

A block right after a `<!-- not run: ... -->` comment is left out. The
search protocol's script runs once per search line: the line that
constructs the search is replaced by each of its commented alternatives.
"""

import os
import re

import pytest

from tests.fresh_process import REPO

_BLOCK = re.compile(r"(<!-- not run[^>]*-->\s*\n)?```python\n(.*?)```", re.DOTALL)
_SEARCH_LINE = re.compile(r"^(# )?search = kb\.(\w+)\(.*$", re.MULTILINE)


def page_blocks(name):
    """The runnable Python blocks of `docs/<name>`, in page order."""
    with open(os.path.join(REPO, "docs", name), encoding="utf-8") as f:
        text = f.read()
    return [m.group(2) for m in _BLOCK.finditer(text) if m.group(1) is None]


def protocol_scripts():
    """`{method: script}`: the protocol page's first block with each search line."""
    script = page_blocks("search_protocol.md")[0]
    lines = [m.group(0) for m in _SEARCH_LINE.finditer(script)]
    assert len(lines) == 4, lines
    body = _SEARCH_LINE.sub("", script)
    anchor = "\nresult = search.search("
    assert anchor in body
    return {
        _SEARCH_LINE.match(line).group(2): body.replace(
            anchor, "\n" + line.removeprefix("# ") + anchor
        )
        for line in lines
    }


def test_protocol_script_is_short_and_covers_every_method():
    script = page_blocks("search_protocol.md")[0]
    code = [line for line in script.splitlines() if line.strip() and not line.startswith("#")]
    assert len(code) <= 16, len(code)
    assert sorted(protocol_scripts()) == [
        "AffinityBranching",
        "LearnToBranch",
        "LearnedAllocation",
        "ShareRouting",
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    "method", ["AffinityBranching", "LearnToBranch", "LearnedAllocation", "ShareRouting"]
)
def test_protocol_script_runs(method, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(protocol_scripts()[method], "search_protocol.md", "exec"), {})
    assert f"{method} result" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("page", ["adding_a_method.md", "search_protocol.md"])
def test_page_runs(page, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = "\n\n".join(page_blocks(page))
    assert ".search(" in code
    exec(compile(code, page, "exec"), {"__name__": "docs_page"})
    assert "result" in capsys.readouterr().out
