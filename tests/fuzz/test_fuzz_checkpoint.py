"""Fuzz the training-checkpoint reader (`harness.pipeline.checkpoint.read_checkpoint`, what
``--resume`` loads): a real checkpoint written by `write_checkpoint` is mutated and each
input must load or fail with a `PgolfError` — never another exception, a hang or a memory
blow-up. Mutation families: raw bytes; the body with its digest recomputed (a valid header
over a corrupt body); the JSON header re-serialised with hostile values (length and digest
fixed up); pickle payloads, whole or as the body.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
from pathlib import Path

import pytest
import torch

from tests.fuzz.conftest import Mutator, dumps_hostile, fuzz_count, pickle_payload

checkpoint = pytest.importorskip(
    "harness.pipeline.checkpoint", reason="harness/pipeline/checkpoint.py is not there yet"
)

DEFAULT_N = 1000
_HEAD = struct.Struct("<8sHI")  # magic, version, header length (harness/pipeline/checkpoint.py's docstring)
DIGEST = 32


def _state() -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "model": {"w": torch.randn(16, 8, generator=g), "g": torch.ones(8, dtype=torch.bfloat16)},
        "optimizer": {
            "state": {0: {"momentum_buffer": torch.zeros(16, 8)}},
            "param_groups": [{"lr": 0.02, "params": [0]}],
        },
        "step": 7,
        "clock_ms": float("nan"),
        "pos": (3, 4),
        "flags": [True, None, "x"],
    }


@pytest.fixture(scope="module")
def ckpt_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pgck"
    checkpoint.write_checkpoint(path, _state(), {"step": 7, "world_size": 1})
    return path.read_bytes()


def _parts(blob: bytes) -> tuple[bytes, int, dict, bytes]:
    magic, version, hlen = _HEAD.unpack_from(blob)
    header = json.loads(blob[_HEAD.size : _HEAD.size + hlen])
    return magic, version, header, blob[_HEAD.size + hlen + DIGEST :]


def _join(magic: bytes, version: int, header_text: str, body: bytes) -> bytes:
    h = header_text.encode("utf-8")
    return _HEAD.pack(magic, version, len(h)) + h + hashlib.sha256(body).digest() + body


class CheckpointMutator(Mutator):
    def mutate(self, blob: bytes, marker: Path) -> tuple[str, bytes]:
        magic, version, header, body = _parts(blob)
        kind = self.rng.choice(("bytes", "body", "header", "header", "pickle"))
        if kind == "bytes":
            sub, out = self.bytes_(blob)
            return f"bytes:{sub}", out
        if kind == "body":
            sub, out = self.bytes_(body)
            return f"body:{sub}", _join(magic, version, json.dumps(header), out)
        if kind == "header":
            return "header:hostile", _join(magic, version, dumps_hostile(self.json_value(header)), body)
        if self.rng.random() < 0.5:
            return "pickle:file", pickle_payload(marker)
        return "pickle:body", _join(magic, version, json.dumps(header), pickle_payload(marker))


def _fuzz(ckpt_bytes: bytes, tmp_path: Path, make_tally, n: int, seed: int) -> None:
    mut = CheckpointMutator(random.Random(seed))
    marker = tmp_path / "UNPICKLED"
    target = tmp_path / "checkpoint.pgck"
    tally = make_tally(f"checkpoint read_checkpoint (seed {seed})")
    for _ in range(n):
        kind, data = mut.mutate(ckpt_bytes, marker)
        target.write_bytes(data)
        tally.run(kind, lambda: checkpoint.read_checkpoint(target), _check)
    assert not marker.exists(), "a pickle payload was unpickled"


def _check(result) -> None:
    state, meta = result
    assert isinstance(meta, dict)


def test_unmutated_checkpoint_loads(ckpt_bytes, tmp_path):
    path = tmp_path / "c.pgck"
    path.write_bytes(ckpt_bytes)
    state, meta = checkpoint.read_checkpoint(path)
    assert meta["step"] == 7 and torch.equal(state["model"]["w"], _state()["model"]["w"])


def test_fuzz_checkpoint_reader(ckpt_bytes, tmp_path, tally_guard):
    _fuzz(ckpt_bytes, tmp_path, tally_guard, DEFAULT_N, seed=13)


@pytest.mark.fuzz
def test_fuzz_checkpoint_reader_long(ckpt_bytes, tmp_path, tally_guard, request):
    _fuzz(ckpt_bytes, tmp_path, tally_guard, fuzz_count(request, DEFAULT_N), seed=130)
