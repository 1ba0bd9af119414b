"""The Python blocks of the protocol pages run, in page order, as a user would paste them.

A block right after a `<!-- not run: ... -->` comment is left out.
"""

import os
import re

import pytest

from tests.fresh_process import REPO

_BLOCK = re.compile(r"(<!-- not run[^>]*-->\s*\n)?```python\n(.*?)```", re.DOTALL)


def page_code(name):
    """The runnable Python blocks of `docs/<name>`, joined in page order."""
    with open(os.path.join(REPO, "docs", name), encoding="utf-8") as f:
        text = f.read()
    return "\n\n".join(m.group(2) for m in _BLOCK.finditer(text) if m.group(1) is None)


@pytest.mark.slow
@pytest.mark.parametrize("page", ["adding_a_method.md", "search_protocol.md"])
def test_page_runs(page, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = page_code(page)
    assert ".search(" in code
    exec(compile(code, page, "exec"), {"__name__": "docs_page"})
    assert "result" in capsys.readouterr().out
