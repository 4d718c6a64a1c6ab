"""Every Python example in docs/plugins.md runs as written (each in a fresh namespace) and
its own asserts hold, so the guide cannot drift from the plugin API."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
BLOCKS = re.findall(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), flags=re.S)


def test_the_guide_has_an_example_for_every_kind():
    from harness.api.registry import KINDS

    text = GUIDE.read_text(encoding="utf-8")
    assert len(BLOCKS) >= 9
    for kind in KINDS:
        assert f"`{kind}`" in text, f"docs/plugins.md has no section for the kind {kind!r}"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(index):
    code = BLOCKS[index]
    assert "assert" in code, "every example checks what it shows"
    module = types.ModuleType(f"plugin_guide_{index}")  # dataclasses look their module up
    sys.modules[module.__name__] = module
    try:
        exec(compile(code, f"docs/plugins.md[example {index}]", "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]
