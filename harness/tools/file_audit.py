"""Which files a process reads, recorded with a Python audit hook (PEP 578), and which of them it may.

pgolf issue 11: a compressor kept the real payload in a file beside its own package, so the counted
artifact was 19 KB for a 17M-parameter model. The bytes that decide a score must all be in the
files that are counted, so the trusted scorer (`harness.tools.trusted_score`) runs under
`FileAudit` and fails when it read anything but the artifact, the validation shards (and the
dataset's manifest, read by `harness.pipeline.data_binding`), the tokenizer, installed code, or the
kernel's pseudo-files (``/proc``, ``/sys``, ``/dev`` but not ``/dev/shm``).

"Installed code" is a file with a code suffix (`CODE_SUFFIXES`) or a package's metadata
(``*.dist-info``, ``*.egg-info``) under a folder that was on ``sys.path`` when the hook was
installed, or under the standard library; a zip archive named on ``sys.path`` is code too.
A data file beside a package is not code, whatever folder it is in.

Limits (README "Guarantees"): the hook sees ``open`` from Python (``open``, ``io.open``,
``os.open``, imports); a C extension reading with ``fopen`` bypasses it. Hooks cannot be removed
once added, so the process that installs one should do nothing else afterwards.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path

CODE_SUFFIXES: tuple[str, ...] = (".py", ".pyc", ".so", ".pyd", ".pth", ".pyi")
"""Suffixes of files that count as code (a shared library may carry a version: ``libx.so.1``)."""
PSEUDO_ROOTS: tuple[str, ...] = ("/proc/", "/sys/", "/dev/")
"""Kernel pseudo-file systems that libraries read (CPU counts, device nodes); not storage."""
STORAGE_UNDER_PSEUDO: tuple[str, ...] = ("/dev/shm/",)
"""Exceptions under `PSEUDO_ROOTS` that are real storage and so may hold a payload."""


def _is_read(mode: object, flags: object) -> bool:
    """True when an ``open`` event opens for reading (``io.open`` passes a mode, ``os.open`` flags)."""
    if isinstance(mode, str):
        return "r" in mode or "+" in mode
    if isinstance(flags, int):
        return (flags & os.O_ACCMODE) in (os.O_RDONLY, os.O_RDWR)
    return True


def _is_code(path: Path) -> bool:
    name = path.name
    return (
        name.endswith(CODE_SUFFIXES)
        or ".so." in name
        or any(p.endswith((".dist-info", ".egg-info")) for p in path.parts)
    )


class FileAudit:
    """Records every file opened for reading once `install` has run; `violations` judges them."""

    def __init__(self) -> None:
        self.reads: list[str] = []
        self.code_roots: list[Path] = []
        self.code_archives: set[Path] = set()

    def install(self) -> None:
        """Record the code folders (``sys.path`` now, and the standard library), then add the hook."""
        roots = [p for p in sys.path if p]
        roots += [sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")]
        self.code_roots = sorted({Path(p).resolve() for p in roots if Path(p).is_dir()})
        self.code_archives = {Path(p).resolve() for p in roots if not Path(p).is_dir()}
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple) -> None:
        if event != "open" or not args:
            return
        path = args[0]
        if isinstance(path, (str, bytes)) and _is_read(args[1] if len(args) > 1 else None, args[-1]):
            self.reads.append(os.fsdecode(path))

    def _allowed_code(self, path: Path) -> bool:
        if path in self.code_archives:  # zipimport probes the archives named on sys.path
            return True
        return _is_code(path) and any(path.is_relative_to(root) for root in self.code_roots)

    def violations(self, allowed_files: Iterable[Path], allowed_trees: Iterable[Path] = ()) -> list[str]:
        """Each distinct file read that is not in ``allowed_files``, anywhere under ``allowed_trees``,
        installed code or a kernel pseudo-file, in the order first read."""
        files = {Path(p).resolve() for p in allowed_files}
        trees = [Path(d).resolve() for d in allowed_trees]
        out: list[str] = []
        for raw in dict.fromkeys(self.reads):
            path = Path(os.path.abspath(raw))
            text = str(path)
            if text.startswith(PSEUDO_ROOTS) and not text.startswith(STORAGE_UNDER_PSEUDO):
                continue
            resolved = path.resolve()
            if (
                resolved in files
                or any(resolved.is_relative_to(t) for t in trees)
                or self._allowed_code(resolved)
            ):
                continue
            out.append(text)
        return out
