"""Files written before the package layout moved (pgolf 0.1, flat ``harness/``; late QAT and
pruning under ``plugins/quant/``) still load: the artifact rescores to the numbers its run
logged, and the interrupted run's checkpoint, whose config and plugin keys name the old
class paths, resumes to the same quantized tensors and score as the uninterrupted run (the
bytes differ: today's writer writes artifact format version 2, the old run wrote version 1).
The fixtures and the command that wrote them: tests/fixtures/legacy_0_1/README.md."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from harness.api.registry import current_class_path
from harness.pipeline.artifact import read_artifact, read_manifest
from harness.pipeline.checkpoint import read_checkpoint_meta
from harness.pipeline.plugin_manager import full_manager
from harness.pipeline.runner import run
from harness.pipeline.submission import build_submission_config
from harness.tools.rescore import rescore

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_0_1"
FULL, INTERRUPTED = LEGACY / "run_full", LEGACY / "run_interrupted"

# The fixture's submission, with today's module paths.
SUBMISSION = (LEGACY / "submission_as_written.py.txt").read_text(encoding="utf-8")
SUBMISSION = SUBMISSION.replace("harness.config", "harness.api.config").replace(
    "harness.runner", "harness.pipeline.runner"
)
SUBMISSION = SUBMISSION.replace("plugins.quant.late_qat", "plugins.algorithms.late_qat").replace(
    "plugins.quant.prune", "plugins.algorithms.prune"
)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_old_class_paths_map_to_the_moved_modules():
    assert (
        current_class_path("plugins.quant.late_qat.LateQATConfig")
        == "plugins.algorithms.late_qat.LateQATConfig"
    )
    assert current_class_path("plugins.quant.prune.PruneConfig") == "plugins.algorithms.prune.PruneConfig"
    assert (
        current_class_path("plugins.quant.intn.IntNConfig") == "plugins.quant.intn.IntNConfig"
    )  # did not move
    meta = read_checkpoint_meta(INTERRUPTED / "checkpoint.pgck")
    classes = json.dumps(meta["config"])
    assert "plugins.quant.late_qat" not in classes and "plugins.algorithms.late_qat.LateQATConfig" in classes
    assert any(k.endswith("plugins.algorithms.late_qat.LateQAT") for k in meta["observers"])


def test_old_artifact_rescores_to_its_logged_numbers(default_dataset):
    record = json.loads((FULL / "submission.json").read_text(encoding="utf-8"))
    artifact = FULL / record["artifact_file"]
    assert _sha(artifact) == record["artifact_sha256"]
    assert read_manifest(artifact)["quantizer"]["name"] == "intn"
    got = rescore(
        artifact,
        data_path=default_dataset.data_path,
        tokenizer_path=default_dataset.tokenizer_path,
        seq_len=record["train_seq_len"],
        stride=record["eval_stride"],
        batch_seqs=8,
        val_max_tokens=record["val_tokens"],
    )
    assert got["val_bpb"] == pytest.approx(record["roundtrip_val_bpb"], abs=1e-9)
    assert got["sliding_val_bpb"] == pytest.approx(record["sliding_val_bpb"], abs=1e-9)


@pytest.mark.slow
def test_old_checkpoint_resumes_to_the_same_artifact(tmp_path, default_dataset):
    sub = tmp_path / "legacy"
    sub.mkdir()
    (sub / "train_gpt.py").write_text(SUBMISSION, encoding="utf-8")
    run_dir = sub / "runs" / "ckpt"
    shutil.copytree(INTERRUPTED, run_dir)
    record = run(build_submission_config(sub), submission_dir=sub, resume=run_dir)
    expected = json.loads((FULL / "submission.json").read_text(encoding="utf-8"))
    assert record is not None and record["steps"] == expected["steps"]
    registry = full_manager().registry

    def codec(name: str, cfg: dict):
        return registry.get("compressor", name).config_cls(**cfg).build()

    new, new_manifest = read_artifact(run_dir / record["artifact_file"], compressor_for=codec)
    old, old_manifest = read_artifact(FULL / expected["artifact_file"], compressor_for=codec)
    assert (old_manifest["format"], new_manifest["format"]) == ("pgolf-artifact/1", "pgolf-artifact/2")
    assert set(new) == set(old)
    for name, qt in old.items():
        assert new[name].kind == qt.kind and new[name].meta == qt.meta, name
        assert all(new[name].arrays[k].equal(a) for k, a in qt.arrays.items()), name
    assert record["val_bpb"] == expected["val_bpb"]
