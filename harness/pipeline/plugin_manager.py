"""The pluggy plugin manager: built-in plugins, entry-point discovery, tracing, blocking.

Pattern from pytest (`config/__init__.py:default_plugins`), datasette (`plugins.py`:
DEFAULT_PLUGINS, `DATASETTE_LOAD_PLUGINS`, `DATASETTE_TRACE_PLUGINS`) and tox 4
(`plugin/manager.py`: `check_pending()`, a disable list from the environment).

Two ways to build a manager:
* `full_manager()` loads every built-in plugin and the third-party plugins of the
  ``pgolf`` entry-point group: for `pgolf list`, the artifact loader and the tests.
* `run_manager(modules)` registers exactly the modules a run's config names, so a run (and
  its bundle) imports nothing it does not use.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from types import ModuleType

import pluggy

from harness.api import hooks as hookspecs
from harness.api.errors import ConfigError
from harness.api.registry import Registry

# Built-in plugin modules, registered by `full_manager`. One component per module.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "plugins.arch.gpt",
    "plugins.arch.bigram_hash",
    "plugins.arch.smeargate",
    "plugins.arch.value_embed",
    "plugins.arch.value_residual",
    "plugins.arch.gated_attention",
    "plugins.arch.xsa",
    "plugins.arch.recycled_core",
    "plugins.arch.parallel_residual",
    "plugins.arch.upstream_numerics",
    "plugins.arch.conv_moe",
    "plugins.arch.clm_export",
    "plugins.arch.byte_gpt",
    "plugins.arch.qk_temperature",
    "plugins.arch.skip_gates",
    "plugins.activation.leaky_relu2",
    "plugins.optim.muon",
    "plugins.optim.adamw",
    "plugins.quant.int8",
    "plugins.quant.intn",
    "plugins.quant.mixed",
    "plugins.quant.gptq",
    "plugins.algorithms.prune",
    "plugins.algorithms.late_qat",
    "plugins.quant.int4",
    "plugins.averaging.swa",
    "plugins.averaging.ema",
    "plugins.compress.zlib",
    "plugins.compress.zstd",
    "plugins.compress.lzma",
    "plugins.compress.ans",
    "plugins.compress.brotli",
    "plugins.schedule.wallclock_warmdown",
    "plugins.schedule.step_warmdown",
    "plugins.schedule.cosine",
    "plugins.adapt.sgd_chunks",
)

ENV_DISABLE = "PG_DISABLE_PLUGINS"  # comma-separated module or plugin names to block
ENV_TRACE = "PG_TRACE_HOOKS"  # "1" prints every hook call to stderr


class PluginManager:
    """A pluggy manager plus the component registry its plugins filled."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        for name in _disabled():
            self.pm.set_blocked(name)
        if os.environ.get(ENV_TRACE) == "1":
            self.pm.trace.root.setwriter(lambda msg: sys.stderr.write(f"[pg-hook] {msg}"))
            self.pm.enable_tracing()

    @property
    def hook(self) -> pluggy.HookRelay:
        """The hook relay: ``manager.hook.pg_step_end(ctx=...)``."""
        return self.pm.hook

    def register_module(self, module: ModuleType | str) -> None:
        """Register a plugin module (or its dotted name) and collect its components."""
        if isinstance(module, str):
            name = module
            if self.pm.is_blocked(name):
                return
            try:
                module = importlib.import_module(name)
            except ImportError as exc:
                raise ConfigError(f"plugin module {name!r} cannot be imported: {exc}") from exc
        name = module.__name__
        if self.pm.is_blocked(name) or self.pm.is_registered(module):
            return
        self.pm.register(module, name=name)
        impl = getattr(module, "pg_register_components", None)
        if impl is not None:
            impl(registry=self.registry)

    def register_object(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin object (a stateful observer such as an EMA instance)."""
        if not self.pm.is_registered(plugin):
            self.pm.register(plugin, name=name)

    def load_entrypoints(self) -> int:
        """Load third-party plugins from the ``pgolf`` entry-point group; returns how many."""
        before = set(self.pm.get_plugins())
        count = self.pm.load_setuptools_entrypoints(hookspecs.PROJECT)
        for plugin in set(self.pm.get_plugins()) - before:
            impl = getattr(plugin, "pg_register_components", None)
            if impl is not None:
                impl(registry=self.registry)
        return count

    def check_pending(self) -> None:
        """Fail if a plugin implements a ``pg_`` hook that does not exist (a typo)."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise ConfigError(f"plugin implements an unknown hook: {exc}") from exc


def _disabled() -> list[str]:
    raw = os.environ.get(ENV_DISABLE, "")
    return [part.strip() for part in raw.split(",") if part.strip()]


def full_manager(entrypoints: bool = True) -> PluginManager:
    """A manager with every built-in plugin and, unless disabled, the entry-point plugins."""
    manager = PluginManager()
    for name in DEFAULT_PLUGINS:
        manager.register_module(name)
    if entrypoints:
        manager.load_entrypoints()
    manager.check_pending()
    return manager


def run_manager(modules: Iterable[str]) -> PluginManager:
    """A manager with exactly ``modules`` registered (the modules of a run's components)."""
    manager = PluginManager()
    for name in modules:
        manager.register_module(name)
    manager.check_pending()
    return manager
