"""The payload's symbol layout (harness.api.layout) ships only with a compressor that reads it
(pgolf issue 13): every artifact writer needs the tensor classes, only a layout-aware compressor
the layout. Which bundles embed which, and what a file without the layout still writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.api.by_name import LAYOUT_MODULE
from harness.api.protocols import QTensor
from harness.pipeline.artifact import read_artifact
from harness.tools import bundle
from harness.tools.bundle_report import default_extra_modules
from plugins.compress.ans import AnsConfig
from plugins.compress.zlib import ZlibConfig
from plugins.quant.int8 import Int8Config
from tests.artifact_files import write_with_configs
from tests.conftest import write_tiny_submission
from tests.unit.not_bundled import leave_out

ROOT = Path(__file__).resolve().parents[2]
SUBMISSIONS = sorted(p.parent.name for p in (ROOT / "submissions").glob("*/train_gpt.py"))


@pytest.mark.parametrize("submission", SUBMISSIONS)
def test_no_submission_bundle_embeds_the_layout_but_all_have_the_tensor_classes(submission):
    folder = ROOT / "submissions" / submission
    modules = bundle.collect_modules(folder / "train_gpt.py", ROOT, extra=default_extra_modules(folder))
    assert "harness.pipeline.artifact" in modules  # the walk reached the writer
    assert "harness.api.tensor_classes" in modules and LAYOUT_MODULE not in modules


def test_a_submission_that_compresses_with_ans_embeds_the_layout(tmp_path):
    folder = write_tiny_submission(tmp_path / "tiny")
    entry = folder / "train_gpt.py"
    text = entry.read_text(encoding="utf-8")
    text = text.replace("plugins.compress.zlib import ZlibConfig", "plugins.compress.ans import AnsConfig")
    text = text.replace("compressor=ZlibConfig(level=9)", "compressor=AnsConfig()")
    entry.write_text(text, encoding="utf-8")
    modules = bundle.collect_modules(entry, ROOT, extra=default_extra_modules(folder))
    assert "plugins.compress.ans" in modules and LAYOUT_MODULE in modules


def _tensors() -> dict[str, QTensor]:
    codes = torch.randint(-31, 32, (8, 16), dtype=torch.int8, generator=torch.Generator().manual_seed(0))
    scale = torch.rand(8, generator=torch.Generator().manual_seed(1)).to(torch.float16)
    return {"blocks.0.mlp.fc.weight": QTensor("int8_row", {"q": codes, "scale": scale}, {"shape": [8, 16]})}


def _write(path: Path, config) -> None:
    write_with_configs(path, _tensors(), ("int8", Int8Config()), (config.build().name, config))


def test_without_the_layout_a_plain_compressor_writes_and_an_aware_one_names_it(tmp_path, monkeypatch):
    leave_out(monkeypatch, LAYOUT_MODULE)
    _write(tmp_path / "zlib.pgolf", ZlibConfig())
    tensors, _ = read_artifact(tmp_path / "zlib.pgolf", compressor_for=lambda name, cfg: ZlibConfig().build())
    name = "blocks.0.mlp.fc.weight"
    assert torch.equal(tensors[name].arrays["q"], _tensors()[name].arrays["q"])
    with pytest.raises(ModuleNotFoundError, match=r"harness\.api\.layout' was not bundled"):
        _write(tmp_path / "ans.pgolf", AnsConfig())
