"""The bit packing (harness.api.bit_packing) and the calibration path (harness.pipeline.calibration)
ship only with the configurations that use them (pgolf issue 13): which quantizer configs name
them, which submissions' bundles embed them, and that a file without them still writes and reads
everything its own quantizer needs, and refuses the rest with an error naming the module."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.api.by_name import CALIBRATION_MODULE
from harness.api.errors import ArtifactError
from harness.api.quantization import BIT_PACKING_MODULE
from harness.pipeline.artifact import load_state_dict
from harness.pipeline.plugin_manager import full_manager
from harness.tools import bundle
from harness.tools.bundle_report import default_extra_modules
from plugins.compress.zlib import ZlibConfig
from plugins.quant.gptq import GPTQConfig
from plugins.quant.int4 import Int4Config
from plugins.quant.int8 import Int8Config
from plugins.quant.intn import IntNConfig
from plugins.quant.mixed import MixedConfig
from tests.artifact_files import write_with_configs
from tests.unit.not_bundled import leave_out

ROOT = Path(__file__).resolve().parents[2]


def test_only_configs_that_pack_or_calibrate_name_those_modules():
    assert IntNConfig(packed=True).modules_by_name() == (BIT_PACKING_MODULE,)
    assert IntNConfig(packed=False).modules_by_name() == ()
    assert IntNConfig.p1573().modules_by_name() == (BIT_PACKING_MODULE,)
    assert MixedConfig.t1().modules_by_name() == ()  # T1: one code per int8 byte
    assert MixedConfig.p1573().modules_by_name() == (BIT_PACKING_MODULE,)
    assert GPTQConfig().modules_by_name() == (CALIBRATION_MODULE,)
    assert GPTQConfig(packed=True).modules_by_name() == (CALIBRATION_MODULE, BIT_PACKING_MODULE)
    # The baseline int8 and the int4 nibbles never pack bits nor calibrate: nothing to declare.
    assert not hasattr(Int8Config(), "modules_by_name") and not hasattr(Int4Config(), "modules_by_name")


@pytest.mark.parametrize(
    ("submission", "packs", "calibrates"),
    [
        ("baseline", False, False),  # int8
        ("10L_int5mlp", False, False),  # T1's mixed int5/int6, unpacked
        ("conv_moe", False, False),  # int4 nibbles
        ("12L_recycled", True, False),  # P1573's packed int5
        ("sp8192_recur_ttt", False, True),  # GPTQ
    ],
)
def test_a_bundle_embeds_packing_and_calibration_only_when_its_config_uses_them(
    submission, packs, calibrates
):
    folder = ROOT / "submissions" / submission
    modules = bundle.collect_modules(folder / "train_gpt.py", ROOT, extra=default_extra_modules(folder))
    assert "harness.pipeline.export" in modules  # the walk itself did reach the export
    assert (BIT_PACKING_MODULE in modules) == packs
    assert (CALIBRATION_MODULE in modules) == calibrates


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"blocks.0.mlp.fc.weight": torch.randn(48, 40, generator=g) * 0.05, "norm.weight": torch.ones(40)}


def _write(path: Path, cfg) -> Path:
    """An artifact of ``_state()`` quantized by the ``intn`` quantizer ``cfg``."""
    write_with_configs(path, cfg.build().quantize(_state()), ("intn", cfg), ("zlib", ZlibConfig(level=1)))
    return path


def test_without_the_packing_module_unpacked_codes_round_trip_and_packed_ones_are_refused(
    tmp_path, monkeypatch
):
    registry = full_manager().registry
    packed = _write(tmp_path / "packed.pgolf", IntNConfig(passthrough_max_numel=100))
    unpacked_cfg = IntNConfig(packed=False, passthrough_max_numel=100)
    expected = _write(tmp_path / "unpacked.pgolf", unpacked_cfg).read_bytes()
    leave_out(monkeypatch, BIT_PACKING_MODULE)
    # A file whose quantizer stores one code per byte writes the same bytes and reads them back.
    again = _write(tmp_path / "shipped.pgolf", unpacked_cfg)
    assert again.read_bytes() == expected
    state, _ = load_state_dict(again, registry)
    w = _state()["blocks.0.mlp.fc.weight"]
    step = w.abs().amax(dim=1, keepdim=True) / 15  # int5, row max, no floor (the defaults)
    assert torch.allclose(state["blocks.0.mlp.fc.weight"], w, atol=float(step.max()) / 2 + 1e-4)
    # Packing, or reading another quantizer's packed file, names the module it lacks.
    with pytest.raises(ModuleNotFoundError, match="harness.api.bit_packing' was not bundled"):
        IntNConfig(passthrough_max_numel=100).build().quantize(_state())
    refused = r"cannot decode these tensors \(ModuleNotFoundError: .*bit_packing"
    with pytest.raises(ArtifactError, match=refused):
        load_state_dict(packed, registry)
