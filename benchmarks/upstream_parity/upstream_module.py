"""Import an upstream ``train_gpt.py`` from a path the user gives, for the parity scripts here.

Upstream code is never committed to this repository: each script takes ``--upstream PATH``
(README.md in this folder says where to fetch the file). Records that ship their script
lzma+base85 wrapped (``exec(lzma.decompress(base64.b85decode(...)))``) are unwrapped first,
so the module's classes are importable. GPU-only kernels a record imports at the top
(``flash_attn_interface``) are replaced by stubs that fail when called: building a model never
calls them, and a script that runs the model puts a CPU equivalent in the module's name for the
kernel (``train_parity_upstream._cpu_flash_attn``).
"""

from __future__ import annotations

import base64
import importlib.util
import lzma
import re
import sys
import tempfile
from pathlib import Path
from types import ModuleType

GPU_ONLY_MODULES = ("flash_attn_interface", "flash_attn")

_WRAPPED = re.compile(rb"b85decode\(\s*[rb]*[\"']([^\"']+)[\"']")


def load_upstream(path: str | Path, name: str = "upstream_train_gpt") -> ModuleType:
    """The module of the upstream script at ``path`` (its ``main()`` is not run)."""
    path = Path(path)
    source = path.read_bytes()
    match = _WRAPPED.search(source) if len(source) < 200_000 and b"lzma" in source else None
    if match:
        inner = lzma.decompress(base64.b85decode(match.group(1)))
        path = Path(tempfile.mkdtemp(prefix="upstream_")) / path.name
        path.write_bytes(inner)
    for missing in GPU_ONLY_MODULES:
        # A stub from an earlier call has no __spec__, which find_spec refuses.
        if missing not in sys.modules and importlib.util.find_spec(missing) is None:
            sys.modules[missing] = _stub(missing)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _stub(name: str) -> ModuleType:
    module = ModuleType(name)

    def missing(attr: str):
        if attr.startswith("__"):  # module introspection (inspect reads __file__) must see a plain module
            raise AttributeError(attr)

        def call(*args, **kwargs):
            raise RuntimeError(f"{name}.{attr} is GPU-only and was stubbed out for a CPU parity run")

        return call

    module.__getattr__ = missing  # type: ignore[method-assign]
    return module
