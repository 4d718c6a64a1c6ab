"""The shipped form's refusals name the line that raises them (`harness.tools.error_sites`)."""

from __future__ import annotations

import builtins
import re
from pathlib import Path

import pytest

from harness.api import errors
from harness.tools.bundle import _collect, _read_source, prepare_sources
from harness.tools.error_sites import REFUSALS, shorten_error_messages

SOURCE = """\
from harness.api import errors
from harness.api.errors import ConfigError, EvalTimeLimit


def check(x):
    if x == 1:
        raise ConfigError(f"x: expected anything but 1, got {x!r} (see the docs)")
    if x == 2:
        raise errors.DataError("shard header is not the magic number 20240520", x)
    if x == 3:
        raise EvalTimeLimit(f"eval stopped after {x} batches")  # its text is recorded: kept
    if x == 4:
        raise ValueError
    if x == 5:
        raise KeyError(f"no such key {x}")
    return x
"""


def _run(source: str, x: int) -> BaseException | int:
    namespace: dict = {}
    exec(compile(source, "m.py", "exec"), namespace)  # noqa: S102 - our own test source
    try:
        return namespace["check"](x)
    except Exception as exc:  # noqa: BLE001 - the test compares what each version raises
        return exc


def test_refusals_name_their_line_and_keep_their_type():
    short = shorten_error_messages(SOURCE, "pkg/m.py")
    lines = SOURCE.splitlines()
    for x, kind, written in (
        (1, errors.ConfigError, "raise ConfigError("),
        (2, errors.DataError, "raise errors."),
    ):
        exc = _run(short, x)
        assert type(exc) is kind and type(_run(SOURCE, x)) is kind
        origin, line = str(exc).rsplit(":", 1)
        assert origin == "pkg/m.py" and lines[int(line) - 1].lstrip().startswith(written)
    # Outcomes whose text a run records, bare raises and other types are untouched.
    for x in (3, 4, 5):
        assert repr(_run(short, x)) == repr(_run(SOURCE, x))
    assert _run(short, 6) == 6
    assert "see the docs" not in short and "magic number" not in short and "eval stopped after" in short


def test_a_source_without_refusals_is_returned_as_written():
    source = "# a comment\ndef f():\n    raise EvalTimeLimit('late')\n"
    assert shorten_error_messages(source, "x.py") == source
    assert {"ConfigError", "DataError", "ArtifactError"} <= REFUSALS and "EvalTimeLimit" not in REFUSALS


def test_the_shipped_sites_point_at_raises_of_the_readable_sources():
    root = Path(__file__).resolve().parents[2]
    entry = root / "submissions" / "baseline" / "train_gpt.py"
    modules = _collect(entry, root, ("harness", "plugins"), ())
    sources, _, _ = prepare_sources("baseline", modules, _read_source(entry), minify=True)
    readable = {m.origin: _read_source(m.path).splitlines() for m in modules.values() if m.path}
    sites = 0
    for src in sources.values():
        for origin, line in re.findall(r"'((?:harness|plugins)/[\w/]+\.py):(\d+)'", src):
            sites += 1
            assert readable[origin][int(line) - 1].lstrip().startswith("raise "), (origin, line)
    assert sites > 100


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_every_refusal_type_can_be_raised_with_a_site_alone(name):
    kind = getattr(errors, name, None) or getattr(builtins, name)
    assert str(kind("a/b.py:3")) == "a/b.py:3"
