"""The bundler: one self-contained ``train_gpt.py`` per submission.

The challenge counts a submission's code bytes as the bytes of its shipped ``train_gpt.py``
(upstream README; docs/protocol.md §4.3-4.4). Our submissions are short declarative files
that import ``harness`` and ``plugins``, so counting them alone would under-count. This module
finds the modules a submission reaches (by parsing with `ast`; nothing is imported or run)
and writes one file that embeds their sources and serves them from an import hook
(`importlib.abc.MetaPathFinder`, PEP 451), then runs the submission as ``__main__``.
The optional self-extracting shell (`harness.tools.bundle_wrapper`: compressed, one string
literal) is the shape upstream records ship from PR #1285 on; inside it the sources are
minified (`harness.tools.minify`), as the frontier records ship theirs.

Decisions:
* Imports under ``if TYPE_CHECKING:`` are skipped, because they never run. Imports inside
  functions, ``try`` blocks and other ``if`` branches are followed, because they may run.
* Dynamic imports (``importlib.import_module("plugins.x")``) and ``from pkg import *`` are
  not followed. Inside a bundle, a module that was not embedded raises ImportError and is
  never loaded from an installed copy.
* A directory with no ``__init__.py`` (a namespace package) is embedded as an empty package.
* Third-party plugin packages (the ``pgolf`` entry points, `harness.pipeline.plugin_packages`) that the
  submission reaches are embedded like ``harness``/``plugins`` and served by the bundle (pgolf issue
  11: every byte that runs is counted, and the bundle runs where the package is not installed).
* The bootstrap takes ``harness``/``plugins`` over for the whole process: it drops copies
  already imported and refuses every module it does not embed. So run a bundle in a fresh
  interpreter (a subprocess), never with runpy inside a process that uses the real packages.
* When the default ``sys.excepthook`` is in place, it is replaced with
  `traceback.print_exception`. Before Python 3.13 the C hook reads lines from disk, not from
  linecache, and so could not show the embedded lines.
* ``sources_sha256`` is the sha256 over ``origin + "\\0" + source + "\\0"`` (UTF-8) for
  every inlined module in sorted order, then the submission. ``origin`` is the path relative
  to the root, for example ``harness/core.py`` or ``submissions/<name>/train_gpt.py``.

Longer than 400 lines because it is one tool: the import scan, the bundle's bootstrap text and
its self-extracting wrapper must agree byte for byte, and splitting them would put the shipped
format in two places.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from harness import __version__
from harness.api.errors import ConfigError
from harness.api.fileio import write_atomic
from harness.pipeline.plugin_packages import plugin_package_roots
from harness.tools.bundle_wrapper import shell_codecs, wrap
from harness.tools.dead_code import prune_rewritten, prune_sources
from harness.tools.error_sites import shorten_error_messages
from harness.tools.minify import minify_source
from harness.tools.unused_imports import drop_annotations, drop_unused_imports

BUNDLE_FORMAT_VERSION = 2
BUNDLED_PACKAGES: tuple[str, ...] = ("harness", "plugins")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
ORIGIN_PREFIX = "<pgolf-bundle>/"
"""Prefix of every embedded module's ``__file__``. It is not a real path, so nothing on disk
is read by mistake."""

# The bootstrap, which runs in the bundle's ``__main__`` namespace. It reads
# ``_pgolf_sources`` ({origin: source}) and ``__pgolf_bundle__``, which come before it in the
# file. It stays short because every byte counts toward the cap.
_BOOTSTRAP = '''\
def _pgolf_install(files, packages, main):
    import importlib.abc, importlib.machinery, io, linecache, sys

    # The dotted name is the origin's path: harness/api/__init__.py is harness.api.
    sources = {
        o.removesuffix(".py").removesuffix("/__init__").replace("/", "."): (o, s) for o, s in files.items()
    }

    class BundleImporter(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
        """Serves the embedded modules; refuses the rest of the bundled packages."""

        def find_spec(self, name, path=None, target=None):
            if name in sources:
                origin = "<pgolf-bundle>/" + sources[name][0]
                spec = importlib.machinery.ModuleSpec(
                    name, self, origin=origin, is_package=self.is_package(name))
                spec.has_location = True  # so the module gets __file__ = origin
                return spec
            if name.partition(".")[0] in packages:
                raise ModuleNotFoundError(
                    f"module {name!r} was not bundled into this train_gpt.py", name=name)
            return None

        def is_package(self, name):
            return sources[name][0].endswith("__init__.py")

        def get_source(self, name):
            return sources[name][1]

        def get_code(self, name):  # InspectLoader.exec_module runs this code
            origin = "<pgolf-bundle>/" + sources[name][0]
            return compile(sources[name][1], origin, "exec", dont_inherit=True)

    # Copies imported before the hook existed must not be reused.
    for name in [n for n in sys.modules if n.partition(".")[0] in packages]:
        del sys.modules[name]
    # mtime None: not backed by a file, so linecache.checkcache keeps the entry, and
    # tracebacks and inspect.getsource show the embedded lines.
    for origin, source in [*sources.values(), main]:
        lines = io.StringIO(source).readlines()  # split on "\\n" only, as Python's reader does
        linecache.cache["<pgolf-bundle>/" + origin] = (len(source), None, lines, "<pgolf-bundle>/" + origin)
    sys.meta_path.insert(0, BundleImporter())
    if sys.excepthook is sys.__excepthook__:  # before 3.13 the C hook reads lines from disk only
        import traceback

        sys.excepthook = traceback.print_exception


'''


@dataclass(frozen=True, kw_only=True)
class BundleInfo:
    """What `bundle_submission` wrote."""

    path: Path
    """The bundled ``train_gpt.py``."""
    bytes: int
    """Its size on disk (os.path.getsize after writing): the code bytes of the submission."""
    lines: int
    """Its number of lines."""
    modules: list[str]
    """Dotted names of the inlined modules, sorted."""
    sha256: str
    """Hex sha256 of the written file."""


@dataclass(frozen=True)
class _Module:
    """A module found under the root: its file (None for a namespace package) and kind."""

    name: str
    path: Path | None
    is_package: bool

    @property
    def origin(self) -> str:
        """Path relative to the root, with forward slashes (``harness/core.py``)."""
        parts = self.name.split(".")
        return "/".join(parts) + ("/__init__.py" if self.is_package else ".py")


def _read_source(path: Path) -> str:
    """Decode a source file as the import system does (PEP 263 cookie, BOM, universal newlines)."""
    return importlib.util.decode_source(path.read_bytes())


def _locate(root: Path, name: str) -> _Module | None:
    """The module ``name`` under ``root``, or None when neither a file nor a folder has that name."""
    base = root.joinpath(*name.split("."))
    if base.with_suffix(".py").is_file():
        return _Module(name, base.with_suffix(".py"), False)
    if (base / "__init__.py").is_file():
        return _Module(name, base / "__init__.py", True)
    if base.is_dir():
        return _Module(name, None, True)
    return None


def _is_type_checking(test: ast.expr) -> bool:
    """True for ``TYPE_CHECKING`` and ``<anything>.TYPE_CHECKING``."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _import_nodes(nodes: Iterable[ast.AST]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement in ``nodes`` and below, except in ``if TYPE_CHECKING:`` bodies."""
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _import_nodes(node.orelse)
        else:
            yield from _import_nodes(ast.iter_child_nodes(node))


def _resolve_relative(node: ast.ImportFrom, current: str | None, is_package: bool, where: str) -> str:
    """The absolute module name of ``from <dots><module> import ...`` inside ``current``."""
    if current is None:
        raise ConfigError(
            f"{where}: relative import on line {node.lineno} in a file that is not in a package"
        )
    package = current.split(".") if is_package else current.split(".")[:-1]
    if node.level - 1 >= len(package):
        raise ConfigError(f"{where}: relative import on line {node.lineno} goes above the top-level package")
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _wanted(
    node: ast.Import | ast.ImportFrom, current: str | None, is_package: bool, where: str
) -> Iterator[tuple[str, bool]]:
    """(module name, optional) pairs an import statement may load. ``x.y`` from
    ``from x import y`` is optional: it is a module only if such a file exists."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name, False
        return
    module = _resolve_relative(node, current, is_package, where) if node.level else node.module or ""
    yield module, False
    for alias in node.names:
        if alias.name != "*":
            yield f"{module}.{alias.name}", True


def _parents(name: str) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b", "a.b.c"]``."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _parse(path: Path, where: str) -> ast.Module:
    """Parse ``path``; ``where`` names it in the error message."""
    try:
        return ast.parse(_read_source(path), filename=where)
    except SyntaxError as exc:
        raise ConfigError(f"{where}: cannot be parsed (line {exc.lineno}): {exc.msg}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot be read: {exc}") from exc


def _module_name_of(path: Path, root: Path, packages: Sequence[str]) -> tuple[str | None, bool]:
    """The dotted name of ``path`` if it is a module of a bundled package under ``root``."""
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        return None, False
    if rel.suffix != ".py" or not rel.parts or rel.parts[0] not in packages:
        return None, False
    is_package = rel.name == "__init__.py"
    parts = rel.parts[:-1] if is_package else rel.with_suffix("").parts
    return ".".join(parts), is_package


def _display(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when it is inside it (messages stay short and stable)."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _collect(
    entry_file: Path,
    root: Path,
    packages: Sequence[str],
    extra: Sequence[str] = (),
    roots: Mapping[str, Path] | None = None,
) -> dict[str, _Module]:
    """Walk the import graph from ``entry_file`` (and the ``extra`` modules); returns
    {name: module} for the closure. ``roots`` maps a top-level package found elsewhere than
    under ``root`` (a third-party plugin package) to the folder holding it."""
    found: dict[str, _Module] = {}

    def home(name: str) -> Path:
        return (roots or {}).get(name.partition(".")[0], root)

    entry_name, entry_is_package = _module_name_of(entry_file, root, packages)
    queue: list[tuple[Path, str | None, bool]] = [(entry_file, entry_name, entry_is_package)]
    if entry_name is not None:
        queue = []
        _add(entry_name, root, found, queue, entry_file.name)
    for name in extra:
        _add(name, home(name), found, queue, "the run's configuration")
    while queue:
        path, current, is_package = queue.pop()
        where = _display(path, root)
        for node in _import_nodes(_parse(path, where).body):
            for name, optional in _wanted(node, current, is_package, where):
                if name.partition(".")[0] not in packages:
                    continue
                if optional and _locate(home(name), name) is None:
                    continue  # `from pkg import attribute`, not a submodule
                _add(name, home(name), found, queue, where)
    return found


def _add(
    name: str, root: Path, found: dict[str, _Module], queue: list[tuple[Path, str | None, bool]], where: str
) -> None:
    """Record ``name`` and its parent packages, and queue the files not yet parsed."""
    for parent in _parents(name):
        if parent in found:
            continue
        module = _locate(root, parent)
        if module is None:
            expected = root / Path(*parent.split("."))
            raise ConfigError(
                f"{where} imports {name!r}, but {parent!r} is not under {root} "
                f"(expected {expected}.py or {expected}/__init__.py)"
            )
        found[parent] = module
        if module.path is not None:
            queue.append((module.path, parent, module.is_package))


def collect_modules(
    entry_file: Path, root: Path, packages: Sequence[str] = BUNDLED_PACKAGES, extra: Sequence[str] = ()
) -> list[str]:
    """Sorted dotted names of the modules under ``root/<package>/`` that ``entry_file`` reaches.

    Follows ``import x``, ``from x import y`` (``y`` counts when ``x/y.py`` or
    ``x/y/__init__.py`` exists), relative imports, and imports nested in functions or
    branches, transitively. Every parent package is included. Imports in an
    ``if TYPE_CHECKING:`` body are skipped because they never run. ``entry_file`` is itself
    included when it is a module of a bundled package. Raises ConfigError when an imported
    module is missing, naming the importing file.
    """
    return sorted(_collect(Path(entry_file), Path(root), tuple(packages), tuple(extra)))


def module_file(root: Path, name: str) -> Path | None:
    """The source file of module ``name`` under ``root`` (None for a namespace package or
    a module that is not there)."""
    module = _locate(Path(root), name)
    return None if module is None else module.path


def _py_literal(text: str) -> str:
    """A string literal that evaluates to exactly ``text``, and stays readable.

    Uses the raw form ``r'''...'''`` when it round-trips, which is the usual case:
    no ``'''``, no CR or NUL (the tokenizer would change or reject them), and no final
    quote or backslash next to the closing delimiter. Otherwise uses the escaped form, which
    escapes only backslashes, CR, NUL, every third quote of a ``'''`` run, and a final quote.
    """
    raw_ok = "'''" not in text and "\r" not in text and "\0" not in text and not text.endswith(("'", "\\"))
    if raw_ok:
        return f"r'''{text}'''"
    # A final quote is escaped on its own so it cannot join the closing delimiter.
    core, tail = (text[:-1], "\\'") if text.endswith("'") else (text, "")
    body = core.replace("\\", "\\\\").replace("\r", "\\r").replace("\0", "\\x00").replace("'''", "''\\'")
    return f"'''{body}{tail}'''"


def _sources_sha256(entries: Sequence[tuple[str, str]]) -> str:
    """sha256 over ``origin NUL source NUL`` for each (origin, source), in the given order."""
    digest = hashlib.sha256()
    for origin, source in entries:
        digest.update(origin.encode() + b"\0" + source.encode() + b"\0")
    return digest.hexdigest()


def _harness_version(root: Path) -> str:
    """``__version__`` of ``root/harness/__init__.py`` (read with `ast`), else this package's."""
    init = root / "harness" / "__init__.py"
    if init.is_file():
        for node in _parse(init, "harness/__init__.py").body:
            targets = node.targets if isinstance(node, ast.Assign) else []
            if any(isinstance(t, ast.Name) and t.id == "__version__" for t in targets):
                if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                    return node.value.value
    return __version__


def prepare_sources(
    name: str, modules: dict[str, _Module], main_source: str, minify: bool
) -> tuple[dict[str, str], str, str]:
    """The sources to embed ({module: source}, the submission's source) and ``sources_sha256``.
    ``minify``: the messages of refusals become the place they are raised
    (`harness.tools.error_sites`), the embedded sources are pruned of top-level definitions
    nothing refers to (`harness.tools.dead_code`), the annotations and the imports only they used
    are dropped (`harness.tools.unused_imports`), and what then names nothing kept, and they are
    minified (the sha256 still names the sources as written, so a bundle says which code it was
    made from). Shared with `bundle_report`."""
    names = sorted(modules)
    sources = {n: (_read_source(m.path) if m.path is not None else "") for n, m in modules.items()}
    main_origin = f"submissions/{name}/train_gpt.py"
    sha = _sources_sha256([(modules[n].origin, sources[n]) for n in names] + [(main_origin, main_source)])
    if minify:
        reduced, main_reduced = reduce_sources(name, modules, sources, main_source)
        sources, main_source = minify_reduced(name, modules, reduced, main_reduced)
    return sources, main_source, sha


def minify_reduced(
    name: str, modules: dict[str, _Module], reduced: dict[str, str], main_reduced: str
) -> tuple[dict[str, str], str]:
    """The output of `reduce_sources`, minified module by module (`harness.tools.minify`)."""
    minified = {n: minify_source(s, modules[n].origin) for n, s in reduced.items()}
    return minified, minify_source(main_reduced, f"submissions/{name}/train_gpt.py")


def reduce_sources(
    name: str, modules: dict[str, _Module], sources: dict[str, str], main_source: str
) -> tuple[dict[str, str], str]:
    """The embedded sources and the submission's as the shipped form minifies them, names as
    written: refusals' messages shortened, then unreferenced definitions, annotations and the
    imports only those used removed. Shared with `bundle_report`, which names definitions by it."""
    main_key = "\0main"  # no module is named so: the submission, kept whole
    main_origin = f"submissions/{name}/train_gpt.py"
    # Messages first, on the sources as written, so each names its line in the readable bundle.
    sources = {n: shorten_error_messages(s, modules[n].origin) for n, s in sources.items()}
    main_source = shorten_error_messages(main_source, main_origin)
    sources = prune_sources({**sources, main_key: main_source}, roots=[main_key])
    # Annotations out first, as the minifier removes them, so that the imports only they used,
    # and what only those imports named (type aliases), go before the one minifying pass.
    bare = {n: drop_annotations(s) for n, s in sources.items()}
    bare = prune_rewritten(drop_unused_imports(bare), roots=[main_key])
    return bare, bare.pop(main_key)


def assemble(
    name: str,
    version: str,
    modules: dict[str, _Module],
    sources: dict[str, str],
    main_source: str,
    sha: str,
    minified: bool,
    overrides: Mapping[str, str] | None = None,
    packages: tuple[str, ...] = BUNDLED_PACKAGES,
) -> str:
    """The bundle's text from the sources `prepare_sources` returned (or variants of them: `bundle_report`
    swaps one source for "" to measure what it costs). ``overrides`` go into the marker, where the
    run reads them back (`harness.pipeline.setup.recorded_overrides`). ``packages``: the top-level
    packages the bundle serves (and refuses to load from elsewhere)."""
    names = sorted(modules)
    main_origin = f"submissions/{name}/train_gpt.py"
    marker: dict = {"format": BUNDLE_FORMAT_VERSION, "submission": name}
    if minified:
        marker["minified"] = True
    else:  # the shipped form's keys of _pgolf_sources list the modules
        marker["modules"] = names
    marker["sources_sha256"] = sha
    if overrides:
        marker["overrides"] = {str(k): str(v) for k, v in sorted(overrides.items())}
    # The shipped (minified) form drops what only a reader needs: the module listing (in the header
    # and the marker; the keys of _pgolf_sources name the modules), the per-module banner comments
    # and the bootstrap's comments.
    listing = "" if minified else "".join(f"  {n}\n" for n in names)
    banner = (lambda origin: "") if minified else (lambda origin: f"# ---- {origin}\n")
    header = (
        f"# generated by pgolf bundle {version} (minified; train_gpt_readable.py is the readable twin)\n"
        if minified
        else f'"""generated by pgolf bundle — do not edit.\n\nsubmission: {name}\n'
        f"harness version: {version}\nbundle format: {BUNDLE_FORMAT_VERSION}\n"
        f'sources sha256: {sha}\ninlined modules ({len(names)}):\n{listing}"""\n\n'
    )
    out = [header, "_pgolf_sources = {\n"]
    for n in names:
        origin = modules[n].origin
        out.append(f"{banner(origin)}{origin!r}: {_py_literal(sources[n])},\n")
    out += [
        "}\n",
        f"{banner(main_origin)}_pgolf_main_source = {_py_literal(main_source)}\n",
        f"__pgolf_bundle__ = {marker!r}\n\n",
        _minified_bootstrap() if minified else _BOOTSTRAP,
        f"_pgolf_install(_pgolf_sources, {packages!r}, ({main_origin!r}, _pgolf_main_source))\n",
        "del _pgolf_install, _pgolf_sources\n",
        f'exec(compile(_pgolf_main_source, "{ORIGIN_PREFIX}{main_origin}", '
        '"exec", dont_inherit=True), globals())\n',
    ]
    return "".join(out)


@lru_cache(maxsize=1)
def _minified_bootstrap() -> str:
    return minify_source(_BOOTSTRAP, "<pgolf-bundle bootstrap>", keep=("_pgolf_install",)) + "\n"


def _render(
    name: str,
    version: str,
    modules: dict[str, _Module],
    main_source: str,
    minify: bool = False,
    overrides: Mapping[str, str] | None = None,
    packages: tuple[str, ...] = BUNDLED_PACKAGES,
) -> str:
    """The bundle's text: header, embedded sources, marker, bootstrap, and the exec of the
    submission. ``minify``: embed minified sources (``sources_sha256`` still names the
    sources as written, so a bundle says which code it was made from)."""
    sources, main_source, sha = prepare_sources(name, modules, main_source, minify)
    return assemble(name, version, modules, sources, main_source, sha, minify, overrides, packages)


def modules_shell_codecs(modules: Mapping[str, _Module]) -> tuple[str, ...]:
    """The shell codecs a bundle of ``modules`` may use (`bundle_wrapper.shell_codecs`), judged on
    the sources as written: minifying can put an import after a ``try:`` on one line."""
    return shell_codecs(_read_source(m.path) for m in modules.values() if m.path is not None)


def _check_target(submission_file: Path, out_path: Path) -> None:
    """Refuse an output path that is the submission's own source (also through links)."""
    same = out_path.resolve() == submission_file.resolve()
    if not same and out_path.exists():
        same = os.path.samefile(out_path, submission_file)
    if same:
        raise ConfigError(f"refusing to write the bundle over the submission's own source {submission_file}")


def bundle_submission(
    submission_dir: Path,
    out_path: Path,
    *,
    root: Path | None = None,
    compress: bool = False,
    minify: bool | None = None,
    extra_modules: Sequence[str] = (),
    overrides: Mapping[str, str] | None = None,
    encoding: str = "latin1",
) -> BundleInfo:
    """Write one self-contained ``train_gpt.py`` for ``submission_dir`` to ``out_path``.

    ``root`` holds the ``harness`` and ``plugins`` folders; by default it is the folder
    above this package. The output is deterministic: the same sources always give the same
    bytes. ``compress=True`` writes the self-extracting form of the same bundle (`harness.tools.
    bundle_wrapper`: the smallest codec, written as ``encoding``, latin1 or base85),
    with minified sources unless ``minify=False`` (``minify`` defaults to ``compress``: the
    shipped form is golfed, the readable one is not). ``extra_modules`` are embedded with what
    they import although the submission does not import them: modules the run reaches by name
    only when its configuration asks for them (`harness.api.by_name.modules_reached_by_name`).
    ``overrides`` (dotted key -> value string) are recorded in the bundle and applied when it runs,
    after the CPU profile and before the environment and ``--set``: a run records its own, so its
    shipped file replays it (`harness.pipeline.setup.replay_overrides`).
    """
    submission_dir, out_path = Path(submission_dir), Path(out_path)
    root = Path(root) if root is not None else Path(__file__).resolve().parents[2]
    entry = submission_dir / "train_gpt.py"
    if not entry.is_file():
        raise ConfigError(f"submission folder {submission_dir} has no train_gpt.py")
    _check_target(entry, out_path)
    # Third-party plugin packages (the ``pgolf`` entry points) are carried too, when reached (issue 11).
    roots = plugin_package_roots()
    modules = _collect(entry, root, BUNDLED_PACKAGES + tuple(sorted(roots)), tuple(extra_modules), roots)
    carried = sorted({n.partition(".")[0] for n in modules} - set(BUNDLED_PACKAGES))
    name = submission_dir.resolve().name
    if not _NAME_RE.fullmatch(name):
        raise ConfigError(
            f"submission folder name {name!r} must match {_NAME_RE.pattern} (it is written into the bundle)"
        )
    minify = compress if minify is None else minify
    text = _render(
        name,
        _harness_version(root),
        modules,
        _read_source(entry),
        minify=minify,
        overrides=overrides,
        packages=BUNDLED_PACKAGES + tuple(carried),
    )
    if compress:
        codecs = modules_shell_codecs(modules)
        data = wrap(text, encoding, codecs).data
    else:
        data = text.encode("utf-8")
    write_atomic(out_path, data)
    return BundleInfo(
        path=out_path,
        bytes=os.path.getsize(out_path),
        lines=data.count(b"\n"),
        modules=sorted(modules),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def main_bundle_info() -> dict | None:
    """The ``__pgolf_bundle__`` marker of the running ``__main__`` module, or None outside a bundle.

    The runner uses it to tell that it runs from a bundle, and then counts the bytes of
    ``sys.modules["__main__"].__file__`` as the code bytes.
    """
    main = sys.modules.get("__main__")
    info = getattr(main, "__pgolf_bundle__", None)
    return info if isinstance(info, dict) else None
