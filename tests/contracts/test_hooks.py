"""Hook contracts (datasette's and tox's patterns): every hookspec is documented, the list is
frozen, typos are caught, plugins can be blocked."""

from __future__ import annotations

import importlib
import inspect
import types
from pathlib import Path

import pytest

from harness.api import hooks as hookspecs
from harness.api.errors import ConfigError
from harness.api.hooks import HOOK_NAMES, hookimpl
from harness.pipeline.plugin_manager import DEFAULT_PLUGINS, PluginManager, full_manager

ROOT = Path(__file__).resolve().parents[2]


def _specs() -> dict[str, object]:
    return {n: f for n, f in vars(hookspecs).items() if n.startswith("pg_") and callable(f)}


def test_hook_list_is_frozen_and_small():
    assert tuple(sorted(_specs())) == tuple(sorted(HOOK_NAMES))
    assert HOOK_NAMES == (
        "pg_register_components",
        "pg_configure",
        "pg_train_start",
        "pg_step_end",
        "pg_train_end",
        "pg_before_quantize",
        "pg_report",
    )
    assert len(HOOK_NAMES) <= 10


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_hookspec_has_docstring_and_typed_args(name):
    fn = _specs()[name]
    doc = inspect.getdoc(fn) or ""
    assert len(doc.splitlines()) >= 2, f"{name} needs a docstring saying when it runs and what it may change"
    sig = inspect.signature(fn)
    assert all(p.annotation is not inspect.Parameter.empty for p in sig.parameters.values())
    assert set(sig.parameters) <= {"run", "ctx", "model", "state_dict", "registry", "record"}


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_hook_is_documented_in_readme(name):
    assert f"`{name}`" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_check_pending_catches_a_misspelled_hook():
    plugin = types.SimpleNamespace()

    @hookimpl
    def pg_stepend(ctx):  # typo of pg_step_end
        pass

    plugin.pg_stepend = pg_stepend
    manager = PluginManager()
    manager.register_object(plugin, name="typo")
    with pytest.raises(ConfigError, match="pg_stepend"):
        manager.check_pending()


def test_full_manager_registers_builtins():
    manager = full_manager(entrypoints=False)
    for name in DEFAULT_PLUGINS:
        assert manager.pm.has_plugin(name)
    assert len(manager.registry) >= len(DEFAULT_PLUGINS)


def test_disable_env_blocks_a_plugin(monkeypatch):
    monkeypatch.setenv("PG_DISABLE_PLUGINS", "plugins.compress.lzma")
    manager = full_manager(entrypoints=False)
    assert not manager.pm.has_plugin("plugins.compress.lzma")
    assert "lzma" not in manager.registry.names("compressor")


def test_unknown_plugin_module_is_a_clear_error():
    with pytest.raises(ConfigError, match="plugins.nope.missing"):
        PluginManager().register_module("plugins.nope.missing")


def _imported_by_name(name: str) -> bool:
    """A helper module that a plugin of its package imports by name (`harness.api.by_name`),
    which only some configurations need: its name is a string constant there, and it
    implements no hook (it is no plugin of its own)."""
    package = ROOT.joinpath(*name.split(".")[:-1])
    named = any(f'"{name}"' in p.read_text(encoding="utf-8") for p in package.glob("*.py"))
    return named and not any(n.startswith("pg_") for n in vars(importlib.import_module(name)))


def test_every_plugin_module_is_a_default_plugin():
    on_disk = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in (ROOT / "plugins").rglob("*.py")
        if p.name != "__init__.py"
    }
    helpers = {name for name in on_disk - set(DEFAULT_PLUGINS) if _imported_by_name(name)}
    assert on_disk - helpers == set(DEFAULT_PLUGINS)
