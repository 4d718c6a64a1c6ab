"""Tests for harness.tools.bundle: import closure, the self-contained train_gpt.py, and its runtime.

The toy tree uses the real package names ``harness`` and ``plugins``. The real project is
installed (editable) in the interpreter that runs the bundles, so these tests show that a
bundle serves its own embedded copies and never falls back to the installed ones.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import random
import runpy
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.api.errors import ConfigError, PgolfError
from harness.tools import bundle
from harness.tools.bundle import (
    BUNDLE_FORMAT_VERSION,
    BundleInfo,
    bundle_submission,
    collect_modules,
    main_bundle_info,
)

REPO = Path(__file__).resolve().parents[2]

# A value that needs every kind of escaping: triple quotes of both kinds, backslashes
# (also before a quote), non-ASCII, and a form feed and U+2028, which str.splitlines would
# wrongly treat as line breaks.
TRICKY_VALUE = "a ''' b \"\"\" c \\ d \\' é ü ☃ \u2028 \x0c end\\"

TRICKY_SOURCE = (
    '"""A module with awkward characters: \'\'\' and \\\\ and é."""\n'
    "from __future__ import annotations\n"
    f"TEXT = {TRICKY_VALUE!r}\n"
    "PATTERN = r'\\d+\\s*\\''\n"
    "# a comment with a form feed \x0c and a line separator \u2028 inside it\n"
    "\n"
    "def explode() -> None:\n"
    '    raise ValueError("kaboom")  # explode-line\n'
    "\n"
    "LAST = '''x'''  # no newline at the end, and the last character is a quote '"
)

TOY_FILES = {
    "harness/__init__.py": '"""Toy harness."""\n__version__ = "9.9.9-toy"\n',
    "harness/core.py": textwrap.dedent(
        '''\
        """Toy core."""
        from __future__ import annotations

        from typing import TYPE_CHECKING

        if TYPE_CHECKING:
            from harness.typing_only import Nothing  # does not exist: must be skipped


        def greet(name: str) -> str:
            return "toy-core:" + name


        def lazy_value() -> str:
            from harness.lazy import VALUE

            return VALUE
        '''
    ),
    "harness/lazy.py": 'VALUE = "toy-lazy"\n',
    "harness/tricky.py": TRICKY_SOURCE,
    "harness/unused_core.py": 'X = "never bundled"\n',
    "plugins/__init__.py": "",
    "plugins/a/__init__.py": '"""Toy plugin package."""\n',
    "plugins/a/helper.py": "def twice(x: int) -> int:\n    return 2 * x\n",
    "plugins/a/used.py": "from .helper import twice\n\n\ndef value() -> int:\n    return twice(21)\n",
    "plugins/a/unused.py": 'X = "unused plugin"\n',
}

TOY_SUBMISSION = textwrap.dedent(
    '''\
    """Toy submission: prints what it got from the bundled modules as JSON."""
    from __future__ import annotations

    import inspect
    import json
    import sys

    import harness
    from harness import tricky
    from harness.core import greet, lazy_value
    from plugins.a import used


    def _import_error(name: str) -> str:
        try:
            __import__(name)
        except ImportError as exc:
            return f"{type(exc).__name__}: {exc}"
        return "imported"


    if __name__ == "__main__":
        if "--explode" in sys.argv:
            tricky.explode()
        print(json.dumps({
            "greet": greet("x"),
            "lazy": lazy_value(),
            "used": used.value(),
            "tricky_text": tricky.TEXT,
            "tricky_source": inspect.getsource(tricky),
            "version": harness.__version__,
            "harness_file": harness.__file__,
            "plugins_a_path": list(sys.modules["plugins.a"].__path__),
            "marker": globals().get("__pgolf_bundle__"),
            "main_file": __file__,
            "unused_plugin": _import_error("plugins.a.unused"),
            "installed_config": _import_error("harness.api.config"),
        }))
    '''
)

TOY_MODULES = [
    "harness",
    "harness.core",
    "harness.lazy",
    "harness.tricky",
    "plugins",
    "plugins.a",
    "plugins.a.helper",
    "plugins.a.used",
]


def _write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    """A toy repository root with harness/, plugins/ and submissions/toy/train_gpt.py."""
    root = tmp_path / "repo"
    _write_tree(root, {**TOY_FILES, "submissions/toy/train_gpt.py": TOY_SUBMISSION})
    return root


def _run(script: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONIOENCODING"] = "utf-8"
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
    )


def _run_json(script: Path, cwd: Path) -> dict:
    proc = _run(script, cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_collect_modules_finds_exactly_the_used_closure(toy: Path) -> None:
    found = collect_modules(toy / "submissions/toy/train_gpt.py", toy)
    # lazy (imported inside a function), helper (relative import) and the parent packages
    # are in; unused modules and the TYPE_CHECKING-only import are out.
    assert found == TOY_MODULES


def test_collect_modules_from_a_package_module_resolves_its_relative_imports(toy: Path) -> None:
    assert collect_modules(toy / "plugins/a/used.py", toy) == [
        "plugins",
        "plugins.a",
        "plugins.a.helper",
        "plugins.a.used",
    ]


def test_collect_modules_only_follows_the_given_packages(toy: Path) -> None:
    assert collect_modules(toy / "submissions/toy/train_gpt.py", toy, packages=("plugins",)) == [
        "plugins",
        "plugins.a",
        "plugins.a.helper",
        "plugins.a.used",
    ]


def test_the_real_packages_are_importable_here(toy: Path, tmp_path: Path) -> None:
    """Precondition of the next test: without the bundle, `harness` is the installed project."""
    probe = tmp_path / "probe.py"
    probe.write_text("import harness.api.config, json; print(json.dumps(harness.__file__))\n")
    assert Path(_run_json(probe, tmp_path)).resolve() == (REPO / "harness/__init__.py").resolve()


def test_bundle_runs_from_its_embedded_modules_only(toy: Path, tmp_path: Path) -> None:
    out = tmp_path / "dist/train_gpt.py"
    info = bundle_submission(toy / "submissions/toy", out, root=toy)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    got = _run_json(out, elsewhere)

    assert got["greet"] == "toy-core:x"
    assert got["lazy"] == "toy-lazy"
    assert got["used"] == 42
    assert got["version"] == "9.9.9-toy"
    assert got["harness_file"] == "<pgolf-bundle>/harness/__init__.py"
    assert got["plugins_a_path"] == []
    assert got["tricky_text"] == TRICKY_VALUE
    assert got["tricky_source"] == TRICKY_SOURCE
    assert Path(got["main_file"]).resolve() == out.resolve()
    assert got["unused_plugin"].startswith("ModuleNotFoundError")
    assert "'plugins.a.unused'" in got["unused_plugin"] and "not bundled" in got["unused_plugin"]
    # harness.api.config exists in the installed project but was not bundled: no fall-through.
    assert "'harness.api'" in got["installed_config"] and "not bundled" in got["installed_config"]

    marker = got["marker"]
    assert marker["format"] == BUNDLE_FORMAT_VERSION == 2
    assert marker["submission"] == "toy"
    assert marker["modules"] == TOY_MODULES == info.modules
    # The documented definition of sources_sha256, recomputed from the files on disk.
    digest = hashlib.sha256()
    origins = [
        m.replace(".", "/") + ("/__init__.py" if m in ("harness", "plugins", "plugins.a") else ".py")
        for m in TOY_MODULES
    ]
    for origin in [*origins, "submissions/toy/train_gpt.py"]:
        digest.update(origin.encode() + b"\0" + (toy / origin).read_bytes() + b"\0")
    assert marker["sources_sha256"] == digest.hexdigest()


def test_bundle_info_and_header(toy: Path, tmp_path: Path) -> None:
    out = tmp_path / "train_gpt.py"
    info = bundle_submission(toy / "submissions/toy", out, root=toy)
    data = out.read_bytes()
    assert isinstance(info, BundleInfo)
    assert info.path == out
    assert info.bytes == os.path.getsize(out) == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.lines == data.decode().count("\n")
    text = data.decode("utf-8")
    header = ast.get_docstring(ast.parse(text))
    assert header.startswith("generated by pgolf bundle — do not edit")
    for needle in ("submission: toy", "harness version: 9.9.9-toy", "bundle format: 2", *TOY_MODULES):
        assert needle in header
    assert str(toy) not in text and str(tmp_path) not in text  # no absolute paths
    # Ordinary sources are embedded verbatim (readable), not escaped.
    assert TOY_FILES["harness/core.py"] in text and TOY_FILES["plugins/a/used.py"] in text


def test_bundle_is_byte_identical_across_runs_and_locations(toy: Path, tmp_path: Path) -> None:
    first = bundle_submission(toy / "submissions/toy", tmp_path / "a/train_gpt.py", root=toy)
    second = bundle_submission(toy / "submissions/toy", tmp_path / "b/train_gpt.py", root=toy)
    moved = tmp_path / "moved"
    shutil.copytree(toy, moved)
    third = bundle_submission(moved / "submissions/toy", tmp_path / "c/train_gpt.py", root=moved)
    assert first.path.read_bytes() == second.path.read_bytes() == third.path.read_bytes()
    assert first.sha256 == third.sha256


def test_embedded_sources_round_trip_exactly(toy: Path, tmp_path: Path) -> None:
    out = tmp_path / "train_gpt.py"
    bundle_submission(toy / "submissions/toy", out, root=toy)
    tree = ast.parse(out.read_text(encoding="utf-8"))
    table = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_pgolf_sources"
    )
    sources = ast.literal_eval(table)
    assert len(sources) == len(TOY_MODULES)
    for name in TOY_MODULES:
        is_package = name in ("harness", "plugins", "plugins.a")
        origin = name.replace(".", "/") + ("/__init__.py" if is_package else ".py")
        assert sources[origin] == (toy / origin).read_text(encoding="utf-8"), name


def test_string_literals_round_trip_adversarial_text(tmp_path: Path) -> None:
    """Every literal, written to a file and run like a module, evaluates to its text."""
    cases = [
        "",
        "'",
        "''",
        "'''",
        "''''",
        "'''''''",
        "\\",
        "a\\",
        "\\\\",
        "\\'",
        "\\'''",
        "'\\",
        '"""',
        '"\'"',
        "x'",
        "x''",
        "\r\n",
        "\r",
        "\0",
        "é☃\n",
        "\\N{SNOWMAN}",
        "\\u00e9",
        "'''\\'''",
        "line\\\ncont",
        "\x0c\u2028\x85",
        TRICKY_VALUE,
        TRICKY_SOURCE,
    ]
    rng = random.Random(1234)
    alphabet = ["'", '"', "\\", "\n", "\r", "a", "é", "\0", "\x0c", "N", "{", "}"]
    cases += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 14))) for _ in range(3000)]
    module = tmp_path / "literals.py"
    module.write_bytes(
        ("VALUES = [\n" + "".join(f"{bundle._py_literal(c)},\n" for c in cases) + "]\n").encode()
    )
    values = runpy.run_path(str(module))["VALUES"]
    assert len(values) == len(cases)
    for value, case in zip(values, cases, strict=True):
        assert value == case, repr(case)
    # Plain text stays readable: no escaping at all.
    assert bundle._py_literal("def f():\n    return r'\\d'\n") == "r'''def f():\n    return r'\\d'\n'''"


def test_compressed_bundle_runs_and_prints_the_same(toy: Path, tmp_path: Path) -> None:
    plain = bundle_submission(toy / "submissions/toy", tmp_path / "plain/train_gpt.py", root=toy)
    packed = bundle_submission(
        toy / "submissions/toy", tmp_path / "packed/train_gpt.py", root=toy, compress=True, minify=False
    )
    data = packed.path.read_bytes()
    assert data.startswith(b"# coding: latin-1\nimport ") and b";exec(compile(" in data
    assert packed.lines == 2 and packed.bytes == os.path.getsize(packed.path)
    got_plain = _run_json(plain.path, tmp_path)
    got_packed = _run_json(packed.path, tmp_path)
    assert Path(got_packed.pop("main_file")).resolve() == packed.path.resolve()
    got_plain.pop("main_file")
    assert got_packed == got_plain
    assert got_packed["marker"]["submission"] == "toy"
    again = bundle_submission(
        toy / "submissions/toy", tmp_path / "again/train_gpt.py", root=toy, compress=True, minify=False
    )
    assert again.path.read_bytes() == packed.path.read_bytes()


def test_minified_bundle_behaves_the_same_and_is_smaller(toy: Path, tmp_path: Path) -> None:
    """The shipped form (compress=True minifies by default) computes exactly what the readable
    bundle does, awkward string literals included; only the embedded source text differs."""
    plain = bundle_submission(toy / "submissions/toy", tmp_path / "plain/train_gpt.py", root=toy)
    golfed = bundle_submission(
        toy / "submissions/toy", tmp_path / "golfed/train_gpt.py", root=toy, compress=True
    )
    unminified = bundle_submission(
        toy / "submissions/toy", tmp_path / "unmin/train_gpt.py", root=toy, compress=True, minify=False
    )
    assert golfed.bytes < unminified.bytes
    got_plain, got_golfed = _run_json(plain.path, tmp_path), _run_json(golfed.path, tmp_path)
    for got in (got_plain, got_golfed):
        got.pop("main_file")
    # The shipped form's marker says it is minified and leaves the module list to its sources' keys.
    plain_marker = got_plain.pop("marker")
    assert plain_marker.pop("modules") == TOY_MODULES
    assert got_golfed.pop("marker") == {**plain_marker, "minified": True}
    assert got_golfed.pop("tricky_source") != got_plain.pop("tricky_source")  # docstring and comments gone
    assert got_golfed == got_plain
    assert got_golfed["tricky_text"] == TRICKY_VALUE


def test_traceback_shows_bundled_source_lines(toy: Path, tmp_path: Path) -> None:
    out = tmp_path / "train_gpt.py"
    bundle_submission(toy / "submissions/toy", out, root=toy)
    proc = _run(out, tmp_path, "--explode")
    assert proc.returncode != 0
    line = TRICKY_SOURCE.split("\n").index('    raise ValueError("kaboom")  # explode-line') + 1
    assert f'File "<pgolf-bundle>/harness/tricky.py", line {line}, in explode' in proc.stderr
    assert "# explode-line" in proc.stderr
    assert 'File "<pgolf-bundle>/submissions/toy/train_gpt.py"' in proc.stderr
    assert "tricky.explode()" in proc.stderr
    assert "ValueError: kaboom" in proc.stderr


def test_folder_without_train_gpt_is_rejected(tmp_path: Path) -> None:
    empty = tmp_path / "nothing_here"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"submission folder .*nothing_here has no train_gpt.py"):
        bundle_submission(empty, tmp_path / "out.py", root=tmp_path)
    assert not (tmp_path / "out.py").exists()


def test_missing_harness_module_names_importer_and_module(toy: Path, tmp_path: Path) -> None:
    sub = toy / "submissions/broken"
    sub.mkdir()
    (sub / "train_gpt.py").write_text("from harness.nothere import thing\n")
    with pytest.raises(ConfigError, match=r"submissions/broken/train_gpt.py imports 'harness.nothere'"):
        bundle_submission(sub, tmp_path / "out.py", root=toy)
    # Deeper in the graph: the message names the bundled module that has the bad import.
    (toy / "harness/lazy.py").write_text("import plugins.gone.deeper\n")
    with pytest.raises(
        PgolfError, match=r"harness/lazy.py imports 'plugins.gone.deeper', but 'plugins.gone'"
    ):
        collect_modules(toy / "submissions/toy/train_gpt.py", toy)
    assert not (tmp_path / "out.py").exists()


def test_refuses_to_overwrite_the_submission_source(toy: Path) -> None:
    sub = toy / "submissions/toy"
    before = (sub / "train_gpt.py").read_bytes()
    with pytest.raises(ConfigError, match="refusing to write the bundle over"):
        bundle_submission(sub, sub / "train_gpt.py", root=toy)
    assert (sub / "train_gpt.py").read_bytes() == before


def test_main_bundle_info(monkeypatch: pytest.MonkeyPatch) -> None:
    main = sys.modules["__main__"]
    monkeypatch.delattr(main, "__pgolf_bundle__", raising=False)
    assert main_bundle_info() is None
    marker = {"format": 1, "submission": "x", "modules": ["harness"], "sources_sha256": "0" * 64}
    monkeypatch.setattr(main, "__pgolf_bundle__", marker, raising=False)
    assert main_bundle_info() is marker


def test_real_harness_closure_bundles_and_imports(tmp_path: Path) -> None:
    """The real (under construction) harness: a file importing RunConfig bundles and imports."""
    sub = tmp_path / "submissions/real_probe"
    sub.mkdir(parents=True)
    (sub / "train_gpt.py").write_text(
        "from __future__ import annotations\n"
        "import json, sys\n"
        "from harness.api.config import RunConfig\n"
        "if __name__ == '__main__':\n"
        "    print(json.dumps([RunConfig.__module__, sys.modules['harness.api.config'].__file__,\n"
        "                      __pgolf_bundle__['modules']]))\n"
    )
    try:
        info = bundle_submission(sub, tmp_path / "out/train_gpt.py")
    except ConfigError as exc:
        if "imports" in str(exc) and "is not under" in str(exc):
            pytest.skip(f"the real harness is incomplete: {exc}")
        raise
    assert {"harness", "harness.api.config", "harness.api.errors"} <= set(info.modules)
    assert all(m.split(".")[0] in ("harness", "plugins") for m in info.modules)
    compile(info.path.read_bytes(), str(info.path), "exec")
    module, file, modules = _run_json(info.path, tmp_path)
    assert module == "harness.api.config"
    assert file == "<pgolf-bundle>/harness/api/config.py"
    assert modules == info.modules
