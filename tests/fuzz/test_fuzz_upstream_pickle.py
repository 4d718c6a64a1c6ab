"""Fuzz the upstream checkpoint reader (`harness.tools.upstream_pickle.read_torch_file`, what
``pgolf import`` reads): the real upstream-written fixture ``tests/fixtures/upstream_int8``
is mutated and every input must load as plain data or fail with a `PgolfError` — never
another exception, a hang, a memory blow-up, or a pickle payload that runs.

Mutation families: raw bytes of the zlib file; bytes of the inflated zip (CRCs then fail or
the directory breaks); ``data.pkl`` mutated and re-zipped with valid CRCs, so hostile opcode
streams reach the unpickler; single storages truncated or extended; pickle payloads (a
``__reduce__`` that would create a marker file) as the whole file, as ``data.pkl``, and
hidden inside an otherwise valid tensor dict.
"""

from __future__ import annotations

import io
import random
import zipfile
import zlib
from pathlib import Path

import pytest
import torch

from harness.tools.upstream_pickle import read_torch_file
from tests.fuzz.conftest import Mutator, PickleBomb, fuzz_count, pickle_payload

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "upstream_int8" / "tiny.int8.ptz"
DEFAULT_N = 400


def _rezip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


class UpstreamMutator(Mutator):
    def mutate(self, ptz: bytes, members: dict[str, bytes], marker: Path) -> tuple[str, bytes]:
        kind = self.rng.choice(("ptz", "zip", "pkl", "pkl", "storage", "pickle"))
        if kind == "ptz":
            sub, out = self.bytes_(ptz, protect=2)
            return f"ptz:{sub}", out
        if kind == "zip":
            sub, out = self.bytes_(zlib.decompress(ptz))
            return f"zip:{sub}", zlib.compress(out, 1)
        pkl_name = next(n for n in members if n.endswith("data.pkl"))
        if kind == "pkl":
            sub, out = self.bytes_(members[pkl_name])
            return f"pkl:{sub}", _rezip({**members, pkl_name: out})
        if kind == "storage":
            name = self.rng.choice([n for n in members if "/data/" in n])
            sub, out = self.bytes_(members[name])
            return f"storage:{sub}", _rezip({**members, name: out})
        roll = self.rng.random()
        if roll < 0.3:
            return "pickle:file", pickle_payload(marker)
        if roll < 0.6:
            return "pickle:data.pkl", _rezip({**members, pkl_name: pickle_payload(marker)})
        buf = io.BytesIO()
        torch.save({"w": torch.ones(3), "bomb": PickleBomb(marker)}, buf)
        return "pickle:in-tensor-dict", zlib.compress(buf.getvalue(), 1)


def _check(result) -> None:
    # Whatever loads is plain data (the importer then checks the layout it needs).
    stack = [result]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
            stack.extend(value.keys())
        elif isinstance(value, (list, tuple, set, frozenset)):
            stack.extend(value)
        else:
            ok = (type(None), bool, int, float, complex, str, bytes, torch.Tensor, torch.dtype)
            assert isinstance(value, ok), f"left a {type(value).__name__} in the result"


def _fuzz(tmp_path: Path, make_tally, n: int, seed: int) -> None:
    ptz = FIXTURE.read_bytes()
    archive = zipfile.ZipFile(io.BytesIO(zlib.decompress(ptz)))
    members = {info.filename: archive.read(info) for info in archive.infolist()}
    mut = UpstreamMutator(random.Random(seed))
    marker = tmp_path / "UNPICKLED"
    tally = make_tally(f"upstream read_torch_file (seed {seed})")
    for _ in range(n):
        kind, data = mut.mutate(ptz, members, marker)
        tally.run(kind, lambda data=data: read_torch_file(data, "fuzz.ptz"), _check)
    assert not marker.exists(), "a pickle payload was unpickled"


def test_unmutated_fixture_loads():
    obj = read_torch_file(FIXTURE.read_bytes(), "fixture")
    assert obj["__quant_format__"] == "int8_clean_per_row_v1"
    assert obj["quantized"]["tok_emb.weight"].dtype == torch.int8


def test_fuzz_upstream_reader(tmp_path, tally_guard):
    _fuzz(tmp_path, tally_guard, DEFAULT_N, seed=16)


@pytest.mark.fuzz
def test_fuzz_upstream_reader_long(tmp_path, tally_guard, request):
    _fuzz(tmp_path, tally_guard, fuzz_count(request, DEFAULT_N), seed=160)
