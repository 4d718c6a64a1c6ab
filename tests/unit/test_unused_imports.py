"""Imports only annotations used, dropped from the shipped form (`harness.tools.unused_imports`)."""

from __future__ import annotations

import ast

from harness.tools.minify import minify_source
from harness.tools.unused_imports import drop_annotations, drop_unused_imports

LIB = """
from __future__ import annotations
import os
from typing import TYPE_CHECKING, Any
from collections.abc import Mapping, Sequence
from json import dumps as to_json, loads
from dataclasses import dataclass, field
if TYPE_CHECKING:
    from pathlib import Path

@dataclass
class Row:
    items: Sequence[int] = field(default_factory=tuple)

def encode(value: Any, where: Path | None = None) -> str:
    try:
        from decimal import Decimal
    except ImportError:
        pass
    return to_json(value)
"""

USER = """
import lib
from lib import loads
print(lib.Mapping, getattr(lib, "os"), loads)
"""


def _imported_names(source: str) -> set[str]:
    return {
        a.asname or a.name
        for n in ast.walk(ast.parse(source))
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in n.names
    }


def test_names_only_annotations_used_go_and_every_other_stays():
    minified = {"lib": minify_source(LIB, "lib.py"), "user": minify_source(USER, "user.py")}
    out = drop_unused_imports(minified)
    names = _imported_names(out["lib"])
    assert {"Any", "TYPE_CHECKING", "Path", "Decimal"}.isdisjoint(names)  # annotation-only, dead block
    # The class-level annotation of a dataclass field still names Sequence; dataclass and field are
    # called; to_json is called; loads is imported from lib by another module; Mapping is read as an
    # attribute elsewhere; `import os` is never removed (it may be imported for its effect).
    assert {"annotations", "Sequence", "dataclass", "field", "to_json", "loads", "Mapping", "os"} <= names
    assert out["user"] is minified["user"]  # nothing to drop: the very same string
    namespace: dict = {}
    exec(compile(minify_source(out["lib"], "lib.py"), "lib.py", "exec"), namespace)
    assert namespace["encode"]({"a": 1}) == '{"a": 1}' and namespace["Row"]().items == ()


def test_a_block_left_empty_gets_pass_and_still_compiles():
    src = (
        "def f():\n    from typing import Any\n\n"
        "try:\n    from typing import List\nexcept ImportError:\n    pass\n"
    )

    out = drop_unused_imports({"m": src})["m"]
    compile(out, "m.py", "exec")
    assert _imported_names(out) == set()


def test_annotations_go_as_the_minifier_drops_them_and_dataclass_fields_stay():
    src = (
        "from dataclasses import dataclass\n"
        "from typing import Any\n"
        "@dataclass\n"
        "class Row:\n"
        "    width: int = 3\n"
        "def f(a: Any, *rest: int, key: str = 'k', **kw: Any) -> Any:\n"
        "    total: int = a + len(rest)\n"
        "    pending: Any\n"
        "    try:\n"
        "        extra: int\n"
        "    except ValueError:\n"
        "        missing: int\n"
        "    return total, key, Row().width\n"
    )
    out = drop_unused_imports({"m": drop_annotations(src)})["m"]
    assert "Any" not in out and ": int" not in out.split("class Row")[1].split("def f")[1]
    assert "width: int = 3" in out  # a dataclass field is declared by its annotation
    namespace: dict = {}
    exec(compile(out, "m.py", "exec"), namespace)
    assert namespace["f"](1, 2, 3) == (3, "k", 3)
