"""Read a file that ``torch.save`` wrote without running any of the code its pickle names.

Upstream records ship their weights as ``torch.save`` output (``final_model.pt``), often
compressed (``final_model.int8.ptz`` is zlib over it). Loading that with ``torch.load`` means
unpickling third-party bytes, which can run arbitrary code (docs/pitfalls.md §11; even
``weights_only=True`` has had bypasses). This module reads the container itself:

* the outer layer: raw zip, or zlib / lzma over it, decompressed with a hard size bound;
* the zip archive ``torch.save`` writes (format documented in ``torch/serialization.py``):
  ``<archive>/data.pkl`` holds the pickled object graph, ``<archive>/data/<key>`` holds each
  storage's raw little-endian bytes, ``<archive>/byteorder`` says ``little``;
* ``data.pkl`` through `TensorOnlyUnpickler`, whose ``find_class`` never imports anything: it
  answers from a fixed allow-list (the tensor rebuild functions, the storage type names,
  dtypes, ``OrderedDict``) with stand-ins written here, and refuses every other global. The
  stand-ins build tensors from the storage bytes with bounds checked before any view is made.

So the result holds only dicts, lists, tuples, strings, numbers, None, bools, dtypes and CPU
tensors; everything else is an `ArtifactError` naming the file and what was refused.
"""

from __future__ import annotations

import collections
import io
import lzma
import math
import pickle
import pickletools
import zipfile
import zlib
from typing import Any

import numpy as np
import torch

from harness.api.errors import ArtifactError

MAX_DECOMPRESSED_BYTES = 2**31
"""Bound on the inflated ``torch.save`` bytes (an upstream 16 MB artifact inflates to ~20 MB)."""
MAX_PICKLE_BYTES = 64 * 2**20
"""Bound on ``data.pkl`` itself: it holds names and shapes, never tensor data."""
MAX_ENTRIES = 100_000
"""Most zip members accepted (one per storage plus a handful of bookkeeping files)."""
MAX_NDIM = 16

# Legacy typed-storage class names torch.save puts in the pickle, and the element type each means.
STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "ByteStorage": torch.uint8,
    "CharStorage": torch.int8,
    "ShortStorage": torch.int16,
    "IntStorage": torch.int32,
    "LongStorage": torch.int64,
    "BoolStorage": torch.bool,
}
# dtype objects may appear as values (e.g. a dict of original dtypes); they are plain constants.
DTYPE_NAMES = (
    "float32",
    "float64",
    "float16",
    "bfloat16",
    "uint8",
    "int8",
    "int16",
    "int32",
    "int64",
    "bool",
)

_ZIP_MAGIC = b"PK\x03\x04"
_XZ_MAGIC = b"\xfd7zXZ\x00"


class _Sealed:
    """Base of the stand-ins the unpickler hands out: slotted, and refusing pickle's BUILD
    opcode, so a hostile pickle cannot set attributes on them (or, through them, call a
    tensor's ``__setstate__``, which would re-point its storage)."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise ArtifactError(f"data.pkl tries to set state on a {type(self).__name__.lstrip('_')}")


class _StorageType(_Sealed):
    """What the pickle's ``torch.<X>Storage`` global resolves to: just its element dtype."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


class _Storage(_Sealed):
    """One storage read from ``data/<key>``: a flat tensor of its elements."""

    __slots__ = ("flat",)

    def __init__(self, flat: torch.Tensor) -> None:
        self.flat = flat


class _TensorBox(_Sealed):
    """A rebuilt tensor while unpickling; unwrapped by `_unbox` once the pickle is done."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


class _OrderedDict(collections.OrderedDict):
    """``collections.OrderedDict`` stand-in. ``state_dict()`` pickles its ``_metadata``
    attribute as BUILD state; that is accepted when it is a dict and dropped."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise ArtifactError(f"data.pkl sets a {type(state).__name__} as OrderedDict state")


def read_torch_file(data: bytes, where: str) -> Any:
    """The object a ``torch.save`` file holds, from its bytes (raw zip, or zlib/lzma over one).

    ``where`` names the file in error messages.
    """
    return read_torch_zip(_inflate(data, where), where)


def _inflate(data: bytes, where: str) -> bytes:
    if data[:4] == _ZIP_MAGIC:
        return data
    if data[:6] == _XZ_MAGIC:
        codec, name = lzma.LZMADecompressor(), "lzma"
    elif len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0:
        codec, name = zlib.decompressobj(), "zlib"
    else:
        raise ArtifactError(
            f"{where}: neither a torch.save zip archive nor zlib/lzma over one "
            f"(first bytes {data[:8].hex()}); legacy non-zip torch.save files are not supported"
        )
    try:
        out = codec.decompress(data, MAX_DECOMPRESSED_BYTES + 1)
    except (zlib.error, lzma.LZMAError) as exc:
        raise ArtifactError(f"{where}: corrupt {name} stream: {exc}") from None
    if len(out) > MAX_DECOMPRESSED_BYTES:
        raise ArtifactError(f"{where}: {name} stream inflates past {MAX_DECOMPRESSED_BYTES} bytes")
    if not codec.eof:
        raise ArtifactError(f"{where}: {name} stream is truncated")
    return out


def read_torch_zip(data: bytes, where: str) -> Any:
    """The object held by the zip archive ``torch.save`` writes (``data`` is the whole archive)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        NotImplementedError,
        ValueError,
        EOFError,
        OSError,
    ) as exc:
        raise ArtifactError(f"{where}: not a readable zip archive: {exc}") from None
    if len(infos) > MAX_ENTRIES:
        raise ArtifactError(f"{where}: zip holds {len(infos)} members (limit {MAX_ENTRIES})")
    members = {info.filename: info for info in infos}
    pickles = [name for name in members if name.count("/") == 1 and name.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise ArtifactError(f"{where}: expected one '<archive>/data.pkl' member, found {len(pickles)}")
    prefix = pickles[0][: -len("data.pkl")]
    order = members.get(prefix + "byteorder")
    if order is not None and _member(archive, order, 16, where).strip() != b"little":
        raise ArtifactError(f"{where}: storages are not little-endian (byteorder member)")
    text = _member(archive, members[pickles[0]], MAX_PICKLE_BYTES, where)
    _prescan(text, where)
    unpickler = TensorOnlyUnpickler(io.BytesIO(text), archive, members, prefix, where)
    # Tensors are copied out of their storages; views may overlap, but not by more than this.
    unpickler.copy_budget = 2 * len(data) + 2**20
    try:
        return _unbox(unpickler.load(), {})
    except ArtifactError as exc:
        raise ArtifactError(f"{where}: {exc}" if not str(exc).startswith(where) else str(exc)) from None
    except RecursionError:
        raise ArtifactError(f"{where}: data.pkl is nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - any failure of hostile pickle bytes is a bad file
        raise ArtifactError(
            f"{where}: data.pkl is not a readable tensor pickle ({type(exc).__name__}: {exc})"
        ) from None


def _prescan(text: bytes, where: str) -> None:
    """Walk the opcode stream before unpickling it: every length field must fit the bytes
    that follow and every memo index must be one a pickler could have written.

    The C unpickler reading from a file object allocates a declared length before reading
    it, and grows its memo to any index named, so a few hostile bytes could ask for
    gigabytes; pickletools reads the same fields without allocating ahead.
    """
    count = 0
    try:
        for opcode, arg, _pos in pickletools.genops(text):
            count += 1
            if opcode.name in _MEMO_OPCODES and isinstance(arg, int) and not 0 <= arg <= count:
                raise ArtifactError(f"{where}: data.pkl names memo slot {arg} after {count} opcodes")
    except ArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001 - pickletools raises ValueError and others on bad bytes
        raise ArtifactError(
            f"{where}: data.pkl is not a well-formed pickle ({type(exc).__name__}: {exc})"
        ) from None


_MEMO_OPCODES = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"})


def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, where: str) -> bytes:
    """A zip member's bytes, refused before reading when it declares more than ``limit``."""
    if info.file_size > limit:
        raise ArtifactError(
            f"{where}: member {info.filename} declares {info.file_size} bytes (limit {limit})"
        )
    try:
        with archive.open(info) as f:
            out = f.read(limit + 1)
    except (zipfile.BadZipFile, NotImplementedError, ValueError, EOFError, OSError, zlib.error) as exc:
        raise ArtifactError(f"{where}: member {info.filename} is unreadable: {exc}") from None
    if len(out) > limit:
        raise ArtifactError(f"{where}: member {info.filename} holds more than {limit} bytes")
    return out


class TensorOnlyUnpickler(pickle.Unpickler):
    """An unpickler whose globals come from an allow-list of stand-ins, never from imports."""

    def __init__(
        self,
        file: io.BytesIO,
        archive: zipfile.ZipFile,
        members: dict[str, zipfile.ZipInfo],
        prefix: str,
        where: str,
    ) -> None:
        super().__init__(file)
        self._archive, self._members, self._prefix, self._where = archive, members, prefix, where
        self._storages: dict[str, _Storage] = {}
        self.copy_budget = MAX_DECOMPRESSED_BYTES
        """Bytes of tensor data the rebuilds may still copy (many views of one storage, or a
        zero stride, must not turn a small file into gigabytes)."""
        self._allowed: dict[tuple[str, str], Any] = {
            ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor_v2,
            ("torch._utils", "_rebuild_tensor"): self._rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): self._rebuild_parameter,
            ("collections", "OrderedDict"): _OrderedDict,
            ("torch", "Size"): _size,
        }
        for name, dtype in STORAGE_DTYPES.items():
            self._allowed[("torch", name)] = _StorageType(dtype)
        for name in DTYPE_NAMES:
            self._allowed[("torch", name)] = getattr(torch, name)

    def find_class(self, module: str, name: str) -> Any:
        """The allow-listed stand-in for ``module.name``; anything else is refused unimported."""
        try:
            return self._allowed[(module, name)]
        except (KeyError, TypeError):
            raise ArtifactError(
                f"{self._where}: data.pkl refers to {module}.{name}, which a tensor file never needs; "
                "refused without importing it"
            ) from None

    def persistent_load(self, pid: Any) -> _Storage:
        """``('storage', <X>Storage, key, location, numel)`` -> the storage read from data/<key>."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise ArtifactError(f"{self._where}: unexpected persistent id {pid!r:.200}")
        _, stype, key, _location, numel = pid
        if not isinstance(stype, _StorageType) or not isinstance(key, str) or not _is_count(numel):
            raise ArtifactError(f"{self._where}: malformed storage reference {pid!r:.200}")
        if key in self._storages:
            if self._storages[key].flat.dtype != stype.dtype:
                raise ArtifactError(f"{self._where}: storage {key} is referenced with two dtypes")
            return self._storages[key]
        info = self._members.get(f"{self._prefix}data/{key}")
        if info is None:
            raise ArtifactError(f"{self._where}: storage data/{key} is missing from the archive")
        nbytes = numel * stype.dtype.itemsize
        if info.file_size != nbytes:
            raise ArtifactError(
                f"{self._where}: storage data/{key} holds {info.file_size} bytes; "
                f"{numel} x {stype.dtype} need {nbytes}"
            )
        raw = _member(self._archive, info, nbytes, self._where)
        if len(raw) != nbytes:
            raise ArtifactError(f"{self._where}: storage data/{key} is truncated")
        buf = np.frombuffer(raw, dtype=np.uint8).copy()
        if stype.dtype == torch.bool and buf.size and int(buf.max()) > 1:
            raise ArtifactError(f"{self._where}: bool storage data/{key} holds bytes other than 0 and 1")
        flat = torch.from_numpy(buf).view(stype.dtype) if nbytes else torch.empty(0, dtype=stype.dtype)
        self._storages[key] = _Storage(flat)
        return self._storages[key]

    def _rebuild_tensor_v2(
        self,
        storage: Any,
        offset: Any,
        size: Any,
        stride: Any,
        requires_grad: Any = False,
        hooks: Any = None,
        metadata: Any = None,
    ) -> _TensorBox:
        if hooks or metadata:
            raise ArtifactError(f"{self._where}: a tensor carries backward hooks or metadata; refused")
        if not isinstance(requires_grad, bool):
            raise ArtifactError(f"{self._where}: tensor requires_grad is {type(requires_grad).__name__}")
        return self._rebuild_tensor(storage, offset, size, stride)

    def _rebuild_tensor(self, storage: Any, offset: Any, size: Any, stride: Any) -> _TensorBox:
        """A contiguous copy of ``storage[offset]`` viewed with ``size``/``stride``, bounds checked."""
        if not isinstance(storage, _Storage):
            raise ArtifactError(f"{self._where}: tensor storage is a {type(storage).__name__}, not a storage")
        size, stride = _dims(size, self._where, "size"), _dims(stride, self._where, "stride")
        if not _is_count(offset) or len(size) != len(stride):
            raise ArtifactError(
                f"{self._where}: tensor offset {offset!r:.50} or size/stride ranks are invalid"
            )
        numel = math.prod(size)
        if numel > storage.flat.numel():
            raise ArtifactError(
                f"{self._where}: tensor of size {list(size)} has more elements than its storage "
                f"({storage.flat.numel()}); zero strides are not accepted"
            )
        self.copy_budget -= numel * storage.flat.element_size()
        if self.copy_budget < 0:
            raise ArtifactError(f"{self._where}: its tensors copy far more bytes than the file holds")
        if numel:
            last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
            if last >= storage.flat.numel():
                raise ArtifactError(
                    f"{self._where}: tensor of size {list(size)} at offset {offset} reads past its "
                    f"storage of {storage.flat.numel()} elements"
                )
            return _TensorBox(storage.flat.as_strided(size, stride, offset).clone())
        return _TensorBox(torch.empty(size, dtype=storage.flat.dtype))

    def _rebuild_parameter(self, data: Any, requires_grad: Any = False, hooks: Any = None) -> _TensorBox:
        if not isinstance(data, _TensorBox) or hooks:
            raise ArtifactError(f"{self._where}: a parameter wraps something other than a plain tensor")
        return data


def _unbox(value: Any, seen: dict[int, Any]) -> Any:
    """``value`` with every `_TensorBox` replaced by its tensor, containers rebuilt as plain
    dict/list/tuple (``seen`` keeps shared and self-referencing containers shared)."""
    if isinstance(value, _TensorBox):
        return value.tensor
    if isinstance(value, _Sealed):
        raise ArtifactError(f"data.pkl leaves a bare {type(value).__name__.lstrip('_')} in the result")
    if isinstance(value, (dict, list, tuple, set, frozenset)) and id(value) in seen:
        return seen[id(value)]
    if isinstance(value, dict):
        out: dict = {}
        seen[id(value)] = out
        for key, item in value.items():
            out[_unbox(key, seen)] = _unbox(item, seen)
        return out
    if isinstance(value, list):
        out_list: list = []
        seen[id(value)] = out_list
        out_list.extend(_unbox(item, seen) for item in value)
        return out_list
    if isinstance(value, (tuple, set, frozenset)):
        out_seq = type(value)(_unbox(item, seen) for item in value)
        seen[id(value)] = out_seq
        return out_seq
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, bytearray, torch.dtype)):
        return value
    raise ArtifactError(f"data.pkl holds a {type(value).__name__}, which a tensor file never needs")


def _dims(value: Any, where: str, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or len(value) > MAX_NDIM or not all(_is_count(v) for v in value):
        raise ArtifactError(f"{where}: tensor {what} {value!r:.100} is not a tuple of integers >= 0")
    if math.prod(max(v, 1) for v in value) > MAX_DECOMPRESSED_BYTES:
        raise ArtifactError(f"{where}: tensor {what} {value!r:.100} is too large")
    return value


def _size(dims: Any = ()) -> tuple[int, ...]:
    """``torch.Size`` stand-in: a plain tuple."""
    return tuple(dims)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
