"""`harness.tools.upstream_pickle`: files written by the real ``torch.save`` come back equal,
and anything but tensors, containers, numbers and strings is refused without being run."""

from __future__ import annotations

import collections
import io
import lzma
import os
import pickle
import zipfile
import zlib
from pathlib import Path

import pytest
import torch

from harness.api.errors import ArtifactError
from harness.tools import upstream_pickle
from harness.tools.upstream_pickle import read_torch_file


def _saved(obj, **kwargs) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kwargs)
    return buf.getvalue()


class _SystemBomb:
    """Pickles to ``os.system("touch <marker>")``: unpickling it would run a shell."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Rebuild:
    """Pickles to upstream's tensor-rebuild call with chosen arguments (and BUILD state)."""

    def __init__(self, storage, offset, size, stride, state=None) -> None:
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())
        self.state = state

    def __reduce__(self):
        out = (torch._utils._rebuild_tensor_v2, self.args)
        return out if self.state is None else (*out, self.state)


def test_every_dtype_view_and_container_comes_back():
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    lin = torch.nn.Linear(3, 2)
    obj = {
        **{str(dt): torch.arange(5).to(dt) for dt in upstream_pickle.STORAGE_DTYPES.values()},
        "view": base[1:3, 2:5],  # offset and strides into a shared storage
        "transposed": base.t(),
        "scalar": torch.tensor(2.5),
        "empty": torch.empty(0, 3),
        "same": base,
        "state_dict": lin.state_dict(),  # an OrderedDict carrying _metadata
        "param": torch.nn.Parameter(torch.ones(2)),
        "nested": [1, 2.5, "x", None, True, (3, "y"), {"k": -7}],
        "dtypes": {"a": "bfloat16", "b": torch.float16},
    }
    out = read_torch_file(_saved(obj), "t.pt")
    for name in obj:
        if isinstance(obj[name], torch.Tensor):
            assert out[name].dtype == obj[name].dtype and torch.equal(out[name], obj[name]), name
    assert out["view"].tolist() == [[8.0, 9.0, 10.0], [14.0, 15.0, 16.0]]
    assert type(out["state_dict"]) is dict and torch.equal(out["state_dict"]["weight"], lin.weight.detach())
    assert type(out["param"]) is torch.Tensor
    assert out["nested"] == [1, 2.5, "x", None, True, (3, "y"), {"k": -7}]
    assert out["dtypes"] == {"a": "bfloat16", "b": torch.float16}


def test_compressed_layers_are_read():
    obj = {"w": torch.randn(3, 4)}
    for blob in (zlib.compress(_saved(obj), 9), lzma.compress(_saved(obj))):
        assert torch.equal(read_torch_file(blob, "w.ptz")["w"], obj["w"])


def test_os_system_reduce_is_refused_without_running(tmp_path):
    marker = tmp_path / "PWNED"
    blob = _saved({"w": torch.ones(2), "evil": _SystemBomb(marker)})
    with pytest.raises(ArtifactError, match=r"evil\.pt: data\.pkl refers to (posix|os|nt)\.system.*refused"):
        read_torch_file(zlib.compress(blob), "evil.pt")
    assert not marker.exists()


@pytest.mark.parametrize(
    "global_name", [b"builtins\neval", b"torch\nload", b"torch._utils\n_rebuild_qtensor", b"numpy\nndarray"]
)
def test_any_other_global_is_refused(global_name):
    pkl = b"\x80\x02c" + global_name + b"\n)R."
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pkl)
    with pytest.raises(ArtifactError, match="refused without importing it"):
        read_torch_file(buf.getvalue(), "g.pt")


def test_setting_state_on_a_tensor_is_refused():
    # A BUILD on a tensor would call Tensor.__setstate__, which can re-point its storage.
    st = torch.ones(4).storage()
    blob = _saved({"t": _Rebuild(st, 0, (4,), (1,), state=(st, 0, (4,), (1,)))})
    with pytest.raises(ArtifactError, match="set state on a TensorBox"):
        read_torch_file(blob, "b.pt")


@pytest.mark.parametrize(
    ("offset", "size", "stride", "msg"),
    [
        (0, (100,), (1,), "has more elements than its storage"),
        (2, (3,), (1,), "reads past its storage of 4 elements"),
        (0, (1000,), (0,), "zero strides are not accepted"),
        (3, (2,), (1,), "reads past"),
        (0, (2, 2), (1,), "ranks are invalid"),
        (-1, (1,), (1,), "offset"),
        (0, (2,), (-1,), "not a tuple of integers >= 0"),
    ],
)
def test_views_outside_their_storage_are_refused(offset, size, stride, msg):
    blob = _saved({"t": _Rebuild(torch.ones(4).storage(), offset, size, stride)})
    with pytest.raises(ArtifactError, match=msg):
        read_torch_file(blob, "v.pt")


def test_storage_size_must_match_its_declared_count():
    blob = _saved({"w": torch.ones(4)})
    src = zipfile.ZipFile(io.BytesIO(blob))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for info in src.infolist():
            data = src.read(info)
            z.writestr(info.filename, data[:-4] if info.filename.endswith("data/0") else data)
    with pytest.raises(ArtifactError, match=r"storage data/0 holds 12 bytes; 4 x torch.float32 need 16"):
        read_torch_file(buf.getvalue(), "s.pt")


def test_legacy_and_foreign_files_get_a_clear_error():
    legacy = _saved({"w": torch.ones(2)}, _use_new_zipfile_serialization=False)
    with pytest.raises(ArtifactError, match="legacy non-zip torch.save files are not supported"):
        read_torch_file(legacy, "old.pt")
    with pytest.raises(ArtifactError, match="truncated"):
        read_torch_file(zlib.compress(_saved({"w": torch.ones(2)}))[:-10], "cut.ptz")
    plain = io.BytesIO()
    with zipfile.ZipFile(plain, "w") as z:
        z.writestr("readme.txt", "hi")
    with pytest.raises(ArtifactError, match="expected one '<archive>/data.pkl' member, found 0"):
        read_torch_file(plain.getvalue(), "z.pt")


def test_inflation_is_bounded(monkeypatch):
    monkeypatch.setattr(upstream_pickle, "MAX_DECOMPRESSED_BYTES", 1 << 20)
    with pytest.raises(ArtifactError, match="inflates past 1048576 bytes"):
        read_torch_file(zlib.compress(b"\0" * (4 << 20)), "bomb.ptz")


def test_plain_pickle_protocol_bytes_are_not_a_torch_file(tmp_path):
    marker = tmp_path / "PWNED"
    with pytest.raises(ArtifactError, match="neither a torch.save zip archive"):
        read_torch_file(pickle.dumps(_SystemBomb(marker)), "p.pkl")
    assert not marker.exists()
