"""A shipped bundle finds the prepared default data and never builds it (`harness.pipeline.prepared_data`):
data preparation is not counted code, so it stays out of every bundle."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.api.errors import ConfigError, DataNotPrepared
from harness.pipeline import prepared_data, setup
from harness.pipeline.submission import build_submission_config
from harness.tools.error_sites import shorten_error_messages

ROOT = Path(__file__).resolve().parents[2]


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, line: str, **_: object) -> None:
        self.lines.append(line)


def _resolve_as_a_bundle(monkeypatch, variant: str = "sp1024"):
    monkeypatch.setattr(setup, "dataset_builder", lambda: None)  # what a bundle sees
    config = build_submission_config(ROOT / "submissions" / "baseline")
    assert config.data.data_path is None and config.data.default_variant == variant
    log = _Log()
    return setup._resolve_data(config, SimpleNamespace(is_main=True), log), log


def test_a_bundle_uses_the_prepared_copy(default_dataset, monkeypatch):
    found = prepared_data.find_prepared("sp1024")
    assert found is not None and found.data_path == default_dataset.data_path
    assert found.manifest == default_dataset.manifest
    paths, log = _resolve_as_a_bundle(monkeypatch)
    assert paths.data_path == default_dataset.data_path and paths.builtin
    assert paths.tokenizer_path == default_dataset.tokenizer_path
    assert log.lines == [f"dataset:builtin_default path:{default_dataset.data_path}"]


def test_a_bundle_without_prepared_data_says_how_to_prepare_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PGOLF_CACHE_DIR", str(tmp_path / "empty"))
    for variant in prepared_data.VARIANTS:
        assert prepared_data.find_prepared(variant) is None
    with pytest.raises(DataNotPrepared, match=r"pgolf data build-default --variant sp1024") as exc:
        _resolve_as_a_bundle(monkeypatch)
    assert str(tmp_path / "empty") in str(exc.value)
    assert not (tmp_path / "empty").exists()  # nothing was built or written
    with pytest.raises(ConfigError, match="default_variant='sp4096'"):
        prepared_data.find_prepared("sp4096")


def test_the_shipped_form_keeps_the_preparation_hint():
    source = inspect.getsource(setup)
    shipped = shorten_error_messages(source, "harness/pipeline/setup.py")
    assert "pgolf data build-default --variant" in shipped
    assert "harness/pipeline/setup.py:" in shipped  # other refusals were shortened


def test_a_damaged_copy_is_not_found(default_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("PGOLF_CACHE_DIR", str(tmp_path))
    dest = prepared_data.default_dataset_dir("sp1024")
    shutil.copytree(default_dataset.data_path, dest)
    assert prepared_data.find_prepared("sp1024") is not None
    shard = next(dest.glob("fineweb_val_*.bin"))
    shard.write_bytes(shard.read_bytes()[:-2])  # one token short: the manifest's size no longer holds
    assert prepared_data.find_prepared("sp1024") is None
