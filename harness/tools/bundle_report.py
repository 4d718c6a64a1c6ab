"""What each embedded module, and each top-level function or class in it, costs in shipped bytes.

``pgolf bundle SUBMISSION --report``. The shipped ``train_gpt.py`` is one compressed string
literal over the minified sources of every module the submission reaches (`harness.tools.bundle`,
`harness.tools.bundle_wrapper`), so no module has a size of its own in it; these are the
definitions used here:

* **module (measured, marginal cost)**: the bytes of the shipped bundle minus the bytes of the
  same bundle, in the same codec, with that module's minified source replaced by an empty string
  (its name, header line and marker entry stay). This is what deleting the module's code would
  save, including what it shares with the rest (text that other modules repeat costs little).
  Chosen by measurement over the alternative (each source compressed alone): one brotli-11
  compress of a ~160 KB minified bundle takes about 0.15 s, so the ~50 non-empty modules of a
  bundle cost a few seconds on a few threads. The marginal costs do not sum to the total: the
  rest (bootstrap, header, shell, and the context shared by several modules) is printed as
  "not attributed".
* **function / class (approximation)**: its minified source (`ast.get_source_segment` on the
  minified module parsed again, decorators included) compressed alone with lzma in the latin-1
  shell, minus what the same shell costs around an empty input. A definition compressed alone
  gets no context from the rest of the bundle, so this over-states what removing it would save;
  it ranks definitions, it is not exact.
* **totals**: shipped bytes are exact (the same text `bundle_submission(compress=True)` writes);
  readable bytes are those of the readable, unminified bundle (``train_gpt_readable.py``).

The submission's own ``train_gpt.py`` is a row too, named ``<main>``. The embedded modules are
the ones the run embeds (`harness.api.by_name.modules_reached_by_name`): with what the
submission's config reaches by name (the TTT walk); `bundle_report` takes other
``extra_modules``. The default dataset's builder is data preparation and never ships.
"""

from __future__ import annotations

import ast
import lzma
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from harness.api.errors import ConfigError
from harness.tools import bundle as _bundle
from harness.tools import bundle_wrapper as _wrapper

MAIN_ROW = "<main>"
"""Row name of the submission's own ``train_gpt.py``."""


def _packed_size(text: str, codec: str = "lzma") -> int:
    """Bytes of ``text`` in the shipped shell (`harness.tools.bundle_wrapper`) with ``codec``."""
    data = text.encode("utf-8")
    return len(_wrapper.shell(codec, "latin1", _wrapper.compress(codec, data)))


def _definition_size(text: str) -> int:
    """Bytes of ``text`` alone in the shipped shell's lzma settings. Preset 6 differs from the
    shell's 9 only in its dictionary (8 MiB against 64 MiB), which no definition fills, so the
    stream is as long; it allocates 56 MiB less per call, which made the report 10 s faster."""
    data = lzma.compress(text.encode("utf-8"), format=lzma.FORMAT_XZ, preset=6 | lzma.PRESET_EXTREME)
    return len(_wrapper.shell("lzma", "latin1", data))


_EMPTY_DEFINITION = _definition_size("")
"""What the shell costs around an empty input (the lzma container and the shell's code)."""


@dataclass(frozen=True)
class DefinitionCost:
    """A top-level ``def`` or ``class`` of a module; ``shipped`` is an approximation."""

    name: str
    kind: str
    """``def`` or ``class``."""
    minified: int
    """Bytes of its minified source."""
    shipped: int
    """Its minified source compressed alone (lzma, latin-1 shell), less the shell's empty-input bytes."""


@dataclass(frozen=True)
class ModuleCost:
    """One embedded module (or ``<main>``, the submission itself)."""

    name: str
    minified: int
    """Bytes (UTF-8) of its minified source."""
    shipped: int
    """Marginal cost: shipped bundle bytes minus those with this source emptied."""
    definitions: list[DefinitionCost] = field(default_factory=list)
    """Its top-level functions and classes, largest first."""


@dataclass(frozen=True)
class BundleReport:
    """What `bundle_report` measured."""

    submission: str
    shipped_bytes: int
    """Exact size of the shipped (compressed) ``train_gpt.py``."""
    readable_bytes: int
    """Size of the readable (unminified, uncompressed) bundle."""
    modules: list[ModuleCost]
    """Every embedded module once, plus ``<main>``; largest shipped cost first."""
    codec: str = "lzma"
    """The codec the shipped shell chose (`harness.tools.bundle_wrapper`)."""

    @property
    def unattributed(self) -> int:
        """Shipped bytes no single module accounts for (bootstrap, header, shared context)."""
        return self.shipped_bytes - sum(m.shipped for m in self.modules)


def _segment(source: str, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> str:
    """The source of ``node`` with its decorators (``@`` lines) in front."""
    parts = [f"@{ast.get_source_segment(source, d)}\n" for d in node.decorator_list]
    return "".join(parts) + (ast.get_source_segment(source, node) or "")


def _definitions(source: str) -> list[ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef]:
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:  # the minifier compiles its output, so this is a bug there
        raise ConfigError(f"minified source does not parse again: {exc}") from exc
    return [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]


def definition_costs(minified_source: str, source: str | None = None) -> list[DefinitionCost]:
    """The top-level functions and classes of a minified module, largest approximate cost first.
    ``source``: the module as it went into the minifier (`harness.tools.bundle.reduce_sources`),
    whose definitions, in the same order, name those that renaming private globals renamed."""
    nodes = _definitions(minified_source)
    names = [n.name for n in nodes]
    if source is not None:
        written = [n.name for n in _definitions(source)]
        if len(written) == len(names):  # the minifier keeps every definition, in order
            names = written
    out = []
    for node, name in zip(nodes, names, strict=True):
        text = _segment(minified_source, node)
        kind = "class" if isinstance(node, ast.ClassDef) else "def"
        shipped = max(0, _definition_size(text) - _EMPTY_DEFINITION)
        out.append(DefinitionCost(name, kind, len(text.encode("utf-8")), shipped))
    return sorted(out, key=lambda d: (-d.shipped, d.name))


def default_extra_modules(submission_dir: Path | None = None) -> tuple[str, ...]:
    """The modules a run embeds by name (`harness.api.by_name.modules_reached_by_name`): with
    ``submission_dir``, what that submission's config reaches (the TTT walk for an
    ``eval.adapter``); none without it."""
    if submission_dir is None:
        return ()
    from harness.api.by_name import modules_reached_by_name
    from harness.pipeline.submission import build_submission_config

    config = build_submission_config(Path(submission_dir))
    return modules_reached_by_name(config)


def bundle_report(
    submission_dir: Path, *, root: Path | None = None, extra_modules: Sequence[str] | None = None
) -> BundleReport:
    """Measure the shipped bundle of ``submission_dir`` module by module (see the module docstring).

    ``extra_modules`` as in `harness.tools.bundle.bundle_submission`; None means those of a run
    of the submission's config on the default data (`default_extra_modules`). Writes nothing.
    """
    submission_dir = Path(submission_dir)
    root = Path(root) if root is not None else Path(_bundle.__file__).resolve().parents[2]
    if extra_modules is None:
        extra_modules = default_extra_modules(submission_dir=submission_dir)
    extra = tuple(extra_modules)
    entry = submission_dir / "train_gpt.py"
    if not entry.is_file():
        raise ConfigError(f"submission folder {submission_dir} has no train_gpt.py")
    modules = _bundle._collect(entry, root, _bundle.BUNDLED_PACKAGES, extra)
    name = submission_dir.resolve().name
    version = _bundle._harness_version(root)
    main_source = _bundle._read_source(entry)
    readable = _bundle._render(name, version, modules, main_source, minify=False)
    # The sources as written, then as reduced for the minifier (whose definition names the
    # report prints: the shipped form renames private ones), then minified as the bundle ships them.
    as_written, _, sha = _bundle.prepare_sources(name, modules, main_source, minify=False)
    reduced, main_reduced = _bundle.reduce_sources(name, modules, as_written, main_source)
    sources, main_min = _bundle.minify_reduced(name, modules, reduced, main_reduced)

    codecs = _bundle.modules_shell_codecs(modules)
    full = _wrapper.wrap(
        _bundle.assemble(name, version, modules, sources, main_min, sha, True), codecs=codecs
    )
    total, codec = len(full.data), full.codec

    def shipped(srcs: dict[str, str], main: str) -> int:  # with the codec the whole bundle chose
        return _packed_size(_bundle.assemble(name, version, modules, srcs, main, sha, True), codec)

    # One compress per variant; the codecs release the GIL, so threads run them side by side
    # (each preset-9 lzma compressor holds ~0.7 GB, hence few workers).
    variants = {MAIN_ROW: (sources, "")} | {m: ({**sources, m: ""}, main_min) for m in modules if sources[m]}
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        jobs = {m: pool.submit(shipped, *v) for m, v in variants.items()}
        cost = {m: total - job.result() for m, job in jobs.items()}
    main_defs = definition_costs(main_min, main_reduced)
    rows = [ModuleCost(MAIN_ROW, len(main_min.encode("utf-8")), cost[MAIN_ROW], main_defs)]
    for mod in sorted(modules):
        src = sources[mod]
        defs = definition_costs(src, reduced[mod])
        rows.append(ModuleCost(mod, len(src.encode("utf-8")), cost.get(mod, 0), defs))
    rows.sort(key=lambda r: (-r.shipped, r.name))
    return BundleReport(name, total, len(readable.encode("utf-8")), rows, codec)


def format_report(report: BundleReport, *, top_modules: int = 10, top_definitions: int = 5) -> str:
    """The report as text: totals, the module table (largest first), then the largest
    definitions of the ``top_modules`` largest modules."""
    total = report.shipped_bytes
    width = max([len("module"), *(len(m.name) for m in report.modules)])
    lines = [
        f"submission {report.submission}: shipped train_gpt.py {total:,} bytes (exact), "
        f"readable bundle {report.readable_bytes:,} bytes",
        f"shipped bytes per module: marginal cost in its {report.codec}+latin1 shell "
        "(bundle minus bundle with it emptied)",
        f"{'module':<{width}} | {'minified bytes':>14} | {'shipped bytes (est.)':>20} | {'share':>6}",
        f"{'-' * width}-|-{'-' * 14}-|-{'-' * 20}-|-{'-' * 6}",
    ]
    for m in report.modules:
        share = m.shipped / total if total else 0.0
        lines.append(f"{m.name:<{width}} | {m.minified:>14,} | {m.shipped:>20,} | {share:>6.1%}")
    rest = report.unattributed
    lines.append(
        f"{'(not attributed)':<{width}} | {'':>14} | {rest:>20,} | {rest / total if total else 0.0:>6.1%}"
    )
    lines += ["", "largest definitions (each compressed alone: an approximation, over-states)"]
    for m in report.modules[:top_modules]:
        if not m.definitions:
            continue
        lines.append(f"{m.name}:")
        for d in m.definitions[:top_definitions]:
            lines.append(f"  {d.kind} {d.name}: ~{d.shipped:,} shipped bytes ({d.minified:,} minified)")
    return "\n".join(lines) + "\n"
