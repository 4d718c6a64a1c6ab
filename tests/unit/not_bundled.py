"""Make a module missing the way a shipped ``train_gpt.py`` that did not embed it is: importing it
raises ``ModuleNotFoundError(name=...)`` "was not bundled", as the bundle's importer does
(`harness.tools.bundle`), while the rest of the installed harness stays importable."""

from __future__ import annotations

import importlib.abc
import sys

import pytest


class _NotBundled(importlib.abc.MetaPathFinder):
    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.name:
            raise ModuleNotFoundError(
                f"module {fullname!r} was not bundled into this train_gpt.py", name=fullname
            )
        return None


def leave_out(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Until the test ends, importing module ``name`` fails as in a bundle that left it out."""
    monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NotBundled(name), *sys.meta_path])
