"""Checks a run makes before training (issue 11, item 6) and how its failures read: overrides
applied all at once, stride/iteration/run-id rules, the export preflight, the one-line
``error:`` messages, the bundle's recorded overrides and verify's short messages."""

from __future__ import annotations

import errno
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

from harness.api.config import RunConfig, TrainConfig, resolve
from harness.api.config_checks import nonrecord_reasons
from harness.api.errors import ArtifactError, ConfigError
from harness.pipeline.distributed import DistInfo
from harness.pipeline.failure import RunInterrupted, error_line, exit_status, failure_message
from harness.pipeline.plugin_manager import run_manager
from harness.pipeline.preflight import preflight
from harness.pipeline.setup import check_run_id, prepare_run_dir, replay_overrides
from harness.tools.verify import MAX_DETAIL_CHARS, clip_detail
from plugins.arch.gpt import GPTConfig
from plugins.compress.zlib import ZlibConfig
from plugins.optim.muon import MuonConfig
from plugins.quant.int8 import Int8Config


def _config(**kw) -> RunConfig:
    kw.setdefault("cpu_profile", {})
    return RunConfig(
        name="t",
        model=GPTConfig(num_layers=2, model_dim=64),
        optimizer=MuonConfig(),
        quantizer=Int8Config(),
        compressor=ZlibConfig(level=9),
        train=TrainConfig(train_seq_len=128),
        **kw,
    )


def _resolve(sets=None, environ=None, recorded=None, config=None) -> RunConfig:
    return resolve(config or _config(), cuda=False, environ=environ or {}, sets=sets or {}, recorded=recorded)


# ---------------------------------------------------------------- overrides, all at once


def test_fields_checked_together_may_be_overridden_together():
    # GPTConfig defaults to 8 query / 4 kv heads; 2/2 is valid, 2/4 (one override at a time) is not.
    out = _resolve({"model.num_heads": "2", "model.num_kv_heads": "2"})
    assert (out.model.num_heads, out.model.num_kv_heads) == (2, 2)
    with pytest.raises(ConfigError, match="num_heads=2 must be divisible by num_kv_heads=4"):
        _resolve({"model.num_heads": "2"})


def test_an_invalid_profile_value_fixed_by_set_is_never_checked_alone():
    cfg = _config(cpu_profile={"model.num_heads": 2})  # 2 heads with the default 4 kv heads
    out = resolve(cfg, cuda=False, environ={}, sets={"model.num_kv_heads": "1"})
    assert (out.model.num_heads, out.model.num_kv_heads) == (2, 1)


def test_recorded_overrides_sit_between_the_profile_and_the_environment():
    cfg = _config(cpu_profile={"train.seed": 1, "train.iterations": 9})
    recorded = {"train.seed": "2", "train.iterations": "8", "model.num_layers": "3"}
    out = resolve(cfg, cuda=False, environ={"SEED": "3"}, sets={"train.iterations": "4"}, recorded=recorded)
    assert (out.train.seed, out.train.iterations, out.model.num_layers) == (3, 4, 3)
    with pytest.raises(ConfigError, match="from the shipped train_gpt.py"):
        _resolve(recorded={"model.bogus": "1"})


def test_replay_records_environment_and_sets_but_not_how_the_run_was_operated():
    out = replay_overrides(
        {"model.num_layers": "3", "train.seed": "1"},
        {"SEED": "7", "ITERATIONS": "5", "RUN_ID": "x", "HOME": "/root"},
        {"train.iterations": 6, "train.stop_after_step": "2", "train.checkpoint_every_minutes": "1"},
    )
    assert out == {"model.num_layers": "3", "train.iterations": "6", "train.seed": "7"}


# ---------------------------------------------------------------- values refused before training


@pytest.mark.parametrize(
    ("sets", "fragment"),
    [
        ({"eval.eval_stride": "0"}, r"eval.eval_stride=0: expected 0 < stride <= the sliding window \(128,"),
        ({"eval.eval_stride": "-8"}, "eval.eval_stride=-8"),
        ({"eval.eval_stride": "129"}, "eval.eval_stride=129"),
        ({"eval.eval_stride": "300", "eval.eval_seq_len": "256"}, "eval.eval_stride=300: .*\\(256,"),
        ({"train.iterations": "-1"}, "train.iterations=-1: expected a positive integer"),
        ({"train.iterations": "0"}, "train.iterations=0: expected a positive integer"),
        ({"train.train_batch_tokens": "0"}, "train.train_batch_tokens=0"),
    ],
)
def test_values_no_run_can_honour_are_refused(sets, fragment):
    with pytest.raises(ConfigError, match=fragment):
        _resolve(sets)


def test_strides_other_than_64_run_but_are_labelled_non_record():
    assert nonrecord_reasons(_resolve()) == []
    assert _resolve({"eval.eval_stride": "128"}).eval.eval_stride == 128  # == window: allowed
    reasons = nonrecord_reasons(_resolve({"eval.eval_stride": "8"}))
    assert reasons == ["eval.eval_stride=8: the record protocol scores at stride 64"]


@pytest.mark.parametrize("bad", ["../../x", "/tmp/abs", "a/b", "..", ".hidden", "", "x" * 129, "a\\b", "é"])
def test_run_ids_must_be_plain_names(bad, tmp_path):
    with pytest.raises(ConfigError, match="plain folder name"):
        check_run_id(bad)
    dist = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), backend=None)
    sub = tmp_path / "sub" / "deep"
    sub.mkdir(parents=True)
    if bad:  # an empty --run-id means "none given" (RUN_ID or a fresh id)
        with pytest.raises(ConfigError, match="--run-id"):
            prepare_run_dir(sub, bad, dist)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["sub", "sub/deep"]


@pytest.mark.parametrize("good", ["r1", "20261201T120000Z_1a2b3c", "main_seed42", "v1.2+x"])
def test_plain_run_ids_pass(good):
    assert check_run_id(good) == good


# ---------------------------------------------------------------- the export preflight


@dataclass(frozen=True, kw_only=True)
class UnregisteredCodecConfig:
    """A compressor Config no plugin registers (defined here, not under plugins/)."""

    level: int = 1

    def build(self):
        import zlib

        class Codec:
            name = "mine"

            def compress(self, data: bytes) -> bytes:
                return zlib.compress(data)

            def decompress(self, data: bytes, max_output_size: int) -> bytes:
                return zlib.decompress(data)

        return Codec()


@dataclass(frozen=True, kw_only=True)
class NoneBuildingZlib(ZlibConfig):
    def build(self):
        return None


def _registry(config: RunConfig):
    from harness.api.config import component_modules

    return run_manager(component_modules(config)).registry


def test_preflight_passes_the_shipped_components():
    config = _config()
    preflight(config, _registry(config))


def test_an_unregistered_compressor_is_refused_before_training():
    config = replace(_config(), compressor=UnregisteredCodecConfig())
    with pytest.raises(ConfigError, match="UnregisteredCodecConfig is not a registered component"):
        preflight(config, _registry(config))


def test_a_compressor_building_none_is_refused_before_training():
    config = replace(_config(), compressor=NoneBuildingZlib())
    registry = _registry(_config())
    registry.register("compressor", "none_zlib", NoneBuildingZlib)
    with pytest.raises(ConfigError, match=r"compressor: NoneBuildingZlib.build\(\) returned None"):
        preflight(config, registry)


@dataclass(frozen=True, kw_only=True)
class InlineObserverConfig:
    """A run plugin defined in a submission file (allowed unregistered), built to ``made``."""

    made: bool = True

    def build(self):
        return object() if self.made else None


def test_inline_run_plugins_are_built_once_and_none_is_refused():
    ok = replace(_config(), plugins=(InlineObserverConfig(),))
    preflight(ok, _registry(_config()))
    bad = replace(_config(), plugins=(InlineObserverConfig(), InlineObserverConfig(made=False)))
    with pytest.raises(ConfigError, match=r"plugins\[1\]: InlineObserverConfig.build\(\) returned None"):
        preflight(bad, _registry(_config()))


def test_a_broken_round_trip_is_refused_before_training(monkeypatch):
    config = _config()
    import harness.pipeline.preflight as pf

    def corrupt(path, registry):
        raise ArtifactError(f"{path}: payload sha256 mismatch")

    monkeypatch.setattr(pf, "load_state_dict", corrupt)
    with pytest.raises(ConfigError, match="export round trip failed on a tiny tensor: .*sha256 mismatch"):
        preflight(config, _registry(config))


def test_preflight_leaves_the_seeded_generator_alone():
    config = _config()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    preflight(config, _registry(config))
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------- failure lines


def test_failure_lines_name_the_cause_without_a_traceback():
    full = OSError(errno.ENOSPC, "No space left on device", "/runs/r/final_model.pgolf")
    assert error_line(full) == (
        "error: the disk is full: No space left on device (/runs/r/final_model.pgolf); "
        "the files written so far are kept"
    )
    ro = OSError(errno.EROFS, "Read-only file system", "/ro/runs/r")
    assert "read-only file system" in error_line(ro) and "/ro/runs/r" in error_line(ro)
    assert exit_status(full) == exit_status(ro) == 2
    assert (
        exit_status(ConfigError("x")) == 2 and error_line(ConfigError("bad\n  value")) == "error: bad value"
    )
    assert exit_status(KeyboardInterrupt()) == 130 and "Ctrl-C" in error_line(KeyboardInterrupt())
    assert error_line(RunInterrupted("interrupted (Ctrl-C) after step 3")) == (
        "error: interrupted (Ctrl-C) after step 3"
    )
    assert failure_message(RuntimeError("bug")) is None and exit_status(RuntimeError("bug")) == 1
    assert error_line(RuntimeError("bug")) == "error: unexpected RuntimeError: bug (traceback above)"


# ---------------------------------------------------------------- verify messages


def test_verify_details_stay_short_with_the_sha256_of_what_was_cut():
    bundle_line = 'exec(lzma.decompress(base64.b85decode("' + "A" * 213_600 + '")))'  # one token
    detail = f"train_gpt.py eval-only re-run exited 1: File x | {bundle_line} | SyntaxError: bad"
    short = clip_detail(detail)
    assert len(short) <= MAX_DETAIL_CHARS
    assert (
        f"{len(bundle_line):,} chars, sha256 {hashlib.sha256(bundle_line.encode()).hexdigest()[:16]}" in short
    )
    assert short.startswith("train_gpt.py eval-only re-run exited 1") and short.endswith("SyntaxError: bad")
    many = "\n".join(f"line {i} " + "word " * 40 for i in range(200))
    cut = clip_detail(many)
    assert "\n" not in cut and len(cut) <= MAX_DETAIL_CHARS and "sha256" in cut
    assert clip_detail("claimed 1, measured 2") == "claimed 1, measured 2"


def test_bundle_records_overrides_in_its_marker(tmp_path):
    import ast
    import re

    from harness.tools.bundle import bundle_submission
    from tests.conftest import write_tiny_submission

    sub = write_tiny_submission(tmp_path / "tiny")
    info = bundle_submission(sub, tmp_path / "b.py", overrides={"model.num_layers": "3", "train.seed": "7"})
    text = Path(info.path).read_text()
    marker = ast.literal_eval(re.search(r"^__pgolf_bundle__ = (\{.*\})$", text, flags=re.M).group(1))
    assert marker["overrides"] == {"model.num_layers": "3", "train.seed": "7"}
    plain = bundle_submission(sub, tmp_path / "p.py")
    assert "overrides" not in Path(plain.path).read_text().split("__pgolf_bundle__ = ")[1].splitlines()[0]
