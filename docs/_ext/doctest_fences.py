"""Griffe extension: render docstring examples (`>>>` blocks) as Python code.

Our docstrings follow Keras's layout (an `Example:` heading, then doctest
lines at the same indentation), which griffe's Google parser does not read
as a code section. Without this, the examples would render as Markdown
block quotes, and outputs such as `[1, 2]` would be taken for links.
"""

import griffe


def fence_doctests(text):
    lines, out, in_block = text.split("\n"), [], False
    for line in lines:
        is_doctest = line.lstrip().startswith((">>>", "..."))
        if is_doctest and not in_block:
            out.append("```python")
            in_block = True
        elif in_block and not line.strip():
            out.append("```")
            in_block = False
        out.append(line)
    if in_block:
        out.append("```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
