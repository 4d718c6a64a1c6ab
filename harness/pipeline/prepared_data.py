"""The built-in default dataset as a run finds it: its cache folder, whether a prepared copy there
is whole and of this recipe, and the copy itself (pgolf issue 13: only what the run needs ships).

Preparing the data (collecting the documents, training the tokenizer, encoding and writing the
shards, converting to bytes: `harness.datasets.default`) is data preparation, the job upstream's
``data/cached_challenge_fineweb.py`` does, and no record counts that script as code. So it is
imported by name and never shipped: a run from the repository prepares the data on first use
(or ``pgolf data build-default``), and a shipped ``train_gpt.py`` finds the prepared copy here,
under ``$PGOLF_CACHE_DIR``, and refuses naming that command when there is none.

A prepared folder is whole when its ``manifest.json`` parses, names this build version, binds
its tokenizer (``tokenizer_sha256``) and lists only present files of the recorded sizes. The byte
variant's folder and checks are `harness.pipeline.byte_data`, imported by name: only byte-level
runs ship them.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.api.by_name import BYTE_DATA_MODULE, import_by_name
from harness.api.errors import ConfigError

DEFAULT_DATASET_MODULE = "harness.datasets.default"
"""The builder: imported by name only (`dataset_builder`), so no bundle carries it."""
BUILD_VERSION = 1
"""Bump when the recipe changes, so old caches are not reused."""
SP_VOCABS = {"sp1024": 1024, "sp8192": 8192}
"""The SentencePiece variants and their vocabularies; all share the documents, split and settings."""
VARIANTS = (*SP_VOCABS, "bytes")
"""Values of ``data.default_variant``."""


@dataclass(frozen=True)
class DefaultDataset:
    """A prepared default dataset: shard folder, tokenizer file and parsed manifest."""

    data_path: Path
    tokenizer_path: Path
    manifest: dict


def cache_root() -> Path:
    """``$PGOLF_CACHE_DIR`` if set, else ``~/.cache/pgolf``."""
    env = os.environ.get("PGOLF_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pgolf"


def default_dataset_dir(variant: str = "sp1024") -> Path:
    """Cache folder of a SentencePiece variant of the default dataset for this Python and recipe."""
    name = f"cpython_docs_{variant}_py{sys.version_info.major}{sys.version_info.minor}_v{BUILD_VERSION}"
    return cache_root() / "datasets" / name


def load_prepared(folder: Path) -> DefaultDataset:
    """The DefaultDataset of a whole SentencePiece-variant folder."""
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    return DefaultDataset(data_path=folder, tokenizer_path=folder / "tokenizer.model", manifest=manifest)


def is_complete(folder: Path) -> bool:
    """True when the SentencePiece-variant ``folder`` is whole and of this build version."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        sizes = manifest["bytes"]
        if manifest.get("build_version") != BUILD_VERSION or "tokenizer.model" not in sizes:
            return False
        if "tokenizer_sha256" not in manifest:  # built before manifests bound their tokenizer
            return False
        return all((folder / name).stat().st_size == size for name, size in sizes.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def find_prepared(variant: str = "sp1024") -> DefaultDataset | None:
    """The prepared ``variant`` ("sp1024", "sp8192" or "bytes") of the default dataset, or None
    when the cache holds no whole copy of it."""
    if variant not in VARIANTS:
        raise ConfigError(f"data.default_variant={variant!r}: expected one of {list(VARIANTS)}")
    dest = default_dataset_dir(variant if variant in SP_VOCABS else "sp1024")
    if not is_complete(dest):
        return None
    if variant in SP_VOCABS:
        return load_prepared(dest)
    return import_by_name(BYTE_DATA_MODULE).find_prepared_bytes(load_prepared(dest))


def dataset_builder() -> Any:
    """`harness.datasets.default`, or None inside a bundle (which carries no `harness.datasets`);
    an import failing inside the builder still raises."""
    try:
        return importlib.import_module(DEFAULT_DATASET_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name not in ("harness.datasets", DEFAULT_DATASET_MODULE):
            raise
        return None
