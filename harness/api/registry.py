"""A typed registry of components (architectures, optimizers, quantizers, ...).

Pattern from tox 4 (`tox_register_tox_env(register)` receives a typed registry) and timm
(`list_models()` drives the conformance tests): plugins add their Config classes through
the `pg_register_components` hook; the CLI (`pgolf list`), the artifact loader and the
tests look them up by kind and name.
"""

from __future__ import annotations

from dataclasses import dataclass, is_dataclass

from harness.api.errors import ConfigError

KINDS = (
    "arch",
    "arch_component",
    "activation",
    "optimizer",
    "averaging",
    "quantizer",
    "compressor",
    "schedule",
    "algorithm",
    "callback",
    "adapter",
)
"""Component kinds. ``algorithm``: a run plugin that changes the weights or how they train
(late QAT, pruning); ``callback``: a run plugin that only observes (an extra export);
``adapter``: eval-time adaptation on already-scored tokens (``EvalConfig.adapter``)."""

MOVED_MODULES: dict[str, str] = {
    "plugins.quant.late_qat": "plugins.algorithms.late_qat",
    "plugins.quant.prune": "plugins.algorithms.prune",
}
"""Old module -> new module of every plugin that moved, so that artifacts, configs and
checkpoints written before the move (pgolf 0.1) still name a known class."""


def current_class_path(path: str) -> str:
    """``module.QualName`` as it reads today: the module part mapped through `MOVED_MODULES`."""
    for old, new in MOVED_MODULES.items():
        if path.startswith(old + "."):
            return new + path[len(old) :]
    return path


@dataclass(frozen=True)
class Component:
    """One registered component: its kind, public name, Config class and defining module."""

    kind: str
    name: str
    config_cls: type
    module: str


class Registry:
    """Components by kind and name; a name is registered at most once per kind."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], Component] = {}

    def register(self, kind: str, name: str, config_cls: type) -> None:
        """Add ``config_cls`` (a frozen dataclass with a ``build`` method) as ``kind``/``name``."""
        if kind not in KINDS:
            raise ConfigError(f"unknown component kind {kind!r}; expected one of {', '.join(KINDS)}")
        if not is_dataclass(config_cls) or not callable(getattr(config_cls, "build", None)):
            raise ConfigError(f"{kind} {name!r}: {config_cls!r} must be a dataclass with a build() method")
        key = (kind, name)
        existing = self._items.get(key)
        if existing is not None and existing.config_cls is not config_cls:
            raise ConfigError(
                f"{kind} {name!r} registered twice: by {existing.module} and by {config_cls.__module__}"
            )
        self._items[key] = Component(kind, name, config_cls, config_cls.__module__)

    def get(self, kind: str, name: str) -> Component:
        """The component ``kind``/``name``; the error lists the registered names."""
        try:
            return self._items[(kind, name)]
        except KeyError:
            known = ", ".join(self.names(kind)) or "none"
            raise ConfigError(f"no {kind} named {name!r} is registered (registered: {known})") from None

    def names(self, kind: str) -> list[str]:
        """Registered names of ``kind``, sorted."""
        return sorted(n for (k, n) in self._items if k == kind)

    def name_of(self, config: object) -> str:
        """The registered name of a Config instance's class (for logs and the artifact manifest)."""
        for comp in self._items.values():
            if type(config) is comp.config_cls:
                return comp.name
        raise ConfigError(f"{type(config).__qualname__} is not a registered component Config")

    def by_class_path(self, path: str) -> Component | None:
        """The component whose Config class is ``module.QualName`` ``path`` (None if unknown);
        paths of plugins that moved are read through `MOVED_MODULES`."""
        path = current_class_path(path)
        for comp in self._items.values():
            if f"{comp.config_cls.__module__}.{comp.config_cls.__qualname__}" == path:
                return comp
        return None

    def __iter__(self):
        return iter(sorted(self._items.values(), key=lambda c: (c.kind, c.name)))

    def __len__(self) -> int:
        return len(self._items)
