"""Write run folders in the shape `harness/run.py` leaves them (``submissions/<name>/runs/<id>/``:
``submission.json`` and ``train.log`` as published, optionally ``config.json``, the artifact and
``train_gpt.py`` as a local run keeps them), for the leaderboard's tests.

The log lines copy the format of a real run's log (``submissions/*/runs/smoke/train.log``): the
header with the seed, the ``config:`` line, the protocol/fingerprint line, the final score
lines, the byte lines and the closing ``submission:`` line.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

DATASET = "ab" * 32
TOKENIZER = "cd" * 32
CODE = b"# the shipped bundle\n"
ARTIFACT = b"PGOLF artifact payload " * 8


def base_config(name: str, seed: int, stride: int = 64) -> dict[str, Any]:
    """A small resolved config in the real one's layout (sections as in ``config.json``)."""
    return {
        "name": name,
        "author": "tester",
        "data": {"data_path": None, "tokenizer_path": None, "vocab_size": 1024},
        "eval": {"eval_seq_len": 1024, "eval_stride": stride, "val_max_tokens": 8192},
        "optimizer": {"_class": "plugins.optim.muon.MuonConfig", "matrix_lr": 0.025},
        "train": {"iterations": 40, "seed": seed, "train_seq_len": 1024},
    }


def write_run(
    root: Path,
    name: str,
    run_id: str,
    *,
    seed: int,
    bpb: float,
    protocol: str = "full",
    date: str = "2026-11-22T05:12:02Z",
    dataset: str = DATASET,
    tokenizer: str = TOKENIZER,
    stride: int = 64,
    config_changes: dict[str, dict[str, Any]] | None = None,
    bytes_total: int = 15_000_000,
    valid: bool = True,
    invalid_reasons: list[str] | None = None,
    local_files: bool = False,
    beats_all: bool = True,
    nonrecord_field: bool = True,
) -> Path:
    """One finished run under ``root/<name>/runs/<run_id>/`` whose JSON agrees with its log;
    returns the folder. ``local_files`` adds config.json, the artifact and train_gpt.py;
    ``nonrecord_field=False`` writes a run made before ``nonrecord_reasons`` and the
    ``_nonrecord`` protocol suffix existed."""
    folder = root / name / "runs" / run_id
    folder.mkdir(parents=True)
    if stride != 64 and nonrecord_field:  # as harness/pipeline/setup.py labels such a run
        protocol += "_nonrecord"
    config = base_config(name, seed, stride)
    for section, values in (config_changes or {}).items():
        config[section] = copy.deepcopy(config[section]) | values
    bytes_code = len(CODE)
    loss = 2.4 * bpb
    over = bytes_total > 16_000_000
    data = {
        "name": name,
        "author": "tester",
        "github_id": "",
        "date": date,
        "track": "10min_16mb",
        "protocol": protocol,
        "run_id": run_id,
        "val_bpb": bpb,
        "val_loss": loss,
        "eval_stride": stride,
        "eval_window": 1024,
        "val_tokens": 8192,
        "val_bytes": 19660,
        "bytes_total": bytes_total,
        "bytes_code": bytes_code,
        "bytes_model": bytes_total - bytes_code,
        "byte_limit": 16_000_000,
        "over_budget": over,
        "valid": valid,
        "invalid_reasons": invalid_reasons or [],
        "steps": 40,
        "ms_per_step": 25.0,
        "seed": seed,
        "dataset_sha256": dataset,
        "tokenizer_sha256": tokenizer,
        "artifact_file": "final_model.int8.zlib.pgolf",
        "code_file": "train_gpt.py",
        "artifact_sha256": hashlib.sha256(ARTIFACT).hexdigest(),
        "code_sha256": hashlib.sha256(CODE).hexdigest(),
        "baselines": {"beats_all": beats_all},
    }
    if nonrecord_field:  # the wording of harness.api.config_checks.nonrecord_reasons
        data["nonrecord_reasons"] = (
            [] if stride == 64 else [f"eval.eval_stride={stride}: the record protocol scores at stride 64"]
        )
    if local_files:
        # The artifact's size must be bytes_model, so the fixture's artifact is the real size.
        data["bytes_model"] = len(ARTIFACT)
        data["bytes_total"] = bytes_total = len(ARTIFACT) + bytes_code
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (folder / data["artifact_file"]).write_bytes(ARTIFACT)
        (folder / "train_gpt.py").write_bytes(CODE)
    (folder / "submission.json").write_text(json.dumps(data, indent=2) + "\n")
    lines = [
        "device:cpu no CUDA device found: running the CPU smoke profile (protocol: smoke) world_size:1",
        f"train_batch_tokens:4096 train_seq_len:1024 grad_accum_steps:1 iterations:40 warmup_steps:0 "
        f"max_wallclock_seconds:360.000 seed:{seed}",
        "config:" + json.dumps(config, sort_keys=True, separators=(",", ":")),
        f"run_id:{run_id} run_dir:{folder}",
        f"val_tokens:8192 val_shards:1 protocol:{protocol} dataset_sha256:{dataset[:16]} "
        f"tokenizer_sha256:{tokenizer[:16]}",
        "step:40/40 train_loss:5.0077 train_time:1000ms step_avg:25.00ms",
        f"final_prequant val_loss:{loss - 0.1:.8f} val_bpb:{bpb - 0.05:.8f}",
        f"Code size: {bytes_code} bytes",
        f"Total submission size int8+zlib: {bytes_total} bytes",
        f"final_int8_zlib_roundtrip val_loss:{loss + 0.01:.4f} val_bpb:{bpb + 0.004:.4f} eval_time:10ms",
        f"final_int8_zlib_roundtrip_exact val_loss:{loss + 0.01:.8f} val_bpb:{bpb + 0.004:.8f}",
        f"final_int8_zlib_roundtrip_sliding_window stride:{stride} window:1024 val_loss:{loss:.4f} "
        f"val_bpb:{bpb:.4f} eval_time:20ms",
        f"final_int8_zlib_roundtrip_sliding_window_exact stride:{stride} window:1024 val_loss:{loss:.8f} "
        f"val_bpb:{bpb:.8f}",
    ]
    if over:
        lines.append(f"!!! OVER BUDGET: bytes_total:{bytes_total} > limit:16000000 !!!")
    lines += [
        f"budget: bytes_code:{bytes_code} bytes_model:{bytes_total - bytes_code} bytes_total:{bytes_total} "
        f"limit:16000000 status:{'OVER' if over else 'ok'}",
        f"submission:{folder / 'submission.json'} val_bpb:{bpb:.8f} valid:{valid}",
    ]
    (folder / "train.log").write_text("\n".join(lines) + "\n")
    return folder


def edit_json(folder: Path, **changes: Any) -> None:
    """Hand-edit a run's submission.json (what the leaderboard must catch)."""
    path = folder / "submission.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=2) + "\n")
