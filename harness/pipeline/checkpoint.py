"""Training checkpoints without pickle: save every N minutes of training, resume exactly.

Long runs (the non-record track has no 10-minute cap) can lose hours to one crash. The
checkpoint holds everything the loss trajectory depends on: the model's tensors (in their
own dtypes, so nothing is rounded), the optimizer state (``OptimizerSet.state_dict()``:
nested dicts of tensors and numbers), the state of observer plugins that keep some
(run plugins that implement `harness.api.protocols.Stateful`: ``state_dict()`` /
``load_state_dict(state)``), the step,
the train clock, the RNG states (Python, numpy, torch CPU and CUDA), the data loader's
position and the resolved config, so ``--resume`` continues the same run bit for bit on CPU.

The layout is safetensors' idea (JSON header + raw tensor bytes), with the header also
describing the nesting, and the artifact's digest check (`harness.pipeline.artifact`)::

    magic     8 B   b"PGOLFCK1"
    version   u16   FORMAT_VERSION
    hlen      u32   header length
    header    hlen  UTF-8 JSON: {"format", "meta", "state", "tensors", "body_bytes"}
    digest    32 B  sha256 of the body
    body      rest  every tensor's bytes, back to back (little-endian)

``state`` is the nested state as JSON in which a dict is ``{"t": "dict", "items": [[k, v], ...]}``
(keys may be str or int, as in ``torch.optim`` state), a tuple ``{"t": "tuple", "items": [...]}``,
a tensor ``{"t": "tensor", "i": n}`` (entry n of ``tensors``: dtype, shape, offset, nbytes),
a non-finite float ``{"t": "float", "v": "nan"}``; lists, str, int, float, bool and None are
themselves. Reading decodes bytes to numbers and nothing else; a pickle or ``torch.save``
file, a truncated file or a changed byte is an `ArtifactError` naming the file.

With several ranks, Muon's momentum buffers live only on the rank that owns each matrix
(the baseline's rank-strided split), so each rank r > 0 writes its own optimizer and RNG
state to ``checkpoint.step<S>.rank<r>.pgck`` first; rank 0 then publishes
``checkpoint.pgck`` naming step S, and stale shards are deleted only after that. A kill at
any point leaves a main file whose shards all exist. (Multi-node runs need the run folder
on a shared filesystem.)

Longer than 400 lines because it is the whole checkpoint format (writer, bounded reader,
upgrade of pre-move class paths) plus the checkpointer that saves and restores a run; format
and use change together.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.api.config import RunConfig, dumps
from harness.api.context import DistInfo, TrainContext
from harness.api.errors import ArtifactError, ConfigError, TrainingInterrupted  # noqa: F401  (TrainingInterrupted re-exported)
from harness.api.fileio import write_atomic
from harness.api.protocols import Stateful
from harness.api.quantization import dtype_name, host_bytes
from harness.api.registry import current_class_path
from harness.pipeline.artifact import DTYPES
from harness.pipeline.distributed import barrier

MAGIC = b"PGOLFCK1"
FORMAT_VERSION = 1
FORMAT_NAME = "pgolf-checkpoint/1"
CHECKPOINT_NAME = "checkpoint.pgck"
DIGEST_BYTES = 32
_HEADER = struct.Struct("<8sHI")
_HEADER_KEYS = {"format", "meta", "state", "tensors", "body_bytes"}
_MAX_HEADER = 1 << 30

RESUME_MAY_DIFFER = ("train.checkpoint_every_minutes", "train.stop_after_step")
ADDED_WITH_DEFAULTS: dict[str, Any] = {
    "eval.adapter": None,
    "eval.ttt_chunk_tokens": 32_768,
    "model.init_order": "modules",
    "optimizer.bank_arithmetic": False,
    "optimizer.embed_weight_decay": None,
    "optimizer.row_normalize": False,
    "schedule.warmdown_frac": 0.0,
}
"""Config fields added after checkpoints were written: a saved config without one reads as this
default, so an older checkpoint still resumes a run that leaves it alone."""
"""Config fields that may change between a run and its resume: they decide when
checkpoints are written, never what is trained."""


# ---------------------------------------------------------------- nested state <-> JSON + tensors


def encode_tree(tree: Any) -> tuple[Any, list[torch.Tensor]]:
    """``tree`` as JSON-able nodes plus the tensors they reference, in order."""
    tensors: list[torch.Tensor] = []
    return _encode(tree, tensors, "state"), tensors


def _encode(value: Any, tensors: list[torch.Tensor], where: str) -> Any:
    if isinstance(value, torch.Tensor):
        tensors.append(value.detach().to("cpu").contiguous())
        return {"t": "tensor", "i": len(tensors) - 1}
    if isinstance(value, dict):
        for key in value:
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise ArtifactError(
                    f"checkpoint: {where} has a key {key!r} of type {type(key).__name__}; "
                    "only str and int keys are stored"
                )
        return {"t": "dict", "items": [[k, _encode(v, tensors, f"{where}.{k}")] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"t": "tuple", "items": [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        return {"t": "float", "v": repr(value)}
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, np.generic):
        return _encode(value.item(), tensors, where)
    raise ArtifactError(f"checkpoint: {where} is a {type(value).__name__}, which a checkpoint cannot store")


def decode_tree(node: Any, tensors: list[torch.Tensor], where: str = "state") -> Any:
    """Inverse of `encode_tree`; any malformed node is an `ArtifactError` naming it."""
    if isinstance(node, list):
        return [decode_tree(v, tensors, f"{where}[{i}]") for i, v in enumerate(node)]
    if not isinstance(node, dict):
        if node is None or isinstance(node, (str, bool, int, float)):
            return node
        raise ArtifactError(f"{where}: unexpected JSON value {node!r}")
    tag = node.get("t")
    if tag == "tensor" and set(node) == {"t", "i"} and _is_index(node["i"], len(tensors)):
        return tensors[node["i"]]
    if tag == "float" and set(node) == {"t", "v"} and node["v"] in ("nan", "inf", "-inf"):
        return float(node["v"])
    if tag in ("dict", "tuple") and set(node) == {"t", "items"} and isinstance(node["items"], list):
        if tag == "tuple":
            return tuple(decode_tree(v, tensors, f"{where}[{i}]") for i, v in enumerate(node["items"]))
        return _decode_dict(node["items"], tensors, where)
    raise ArtifactError(f"{where}: malformed node {json.dumps(node)[:200]}")


def _decode_dict(items: list, tensors: list[torch.Tensor], where: str) -> dict:
    out: dict = {}
    for item in items:
        ok = (
            isinstance(item, list)
            and len(item) == 2
            and not isinstance(item[0], bool)
            and isinstance(item[0], (str, int))
        )
        if not ok:
            raise ArtifactError(
                f"{where}: dict item must be [str|int key, value], got {json.dumps(item)[:200]}"
            )
        out[item[0]] = decode_tree(item[1], tensors, f"{where}.{item[0]}")
    return out


# Hard limits on declared shapes, checked before anything is allocated: even a zero-sized
# tensor with a dimension past int64 makes torch.empty fail outside our error path.
_MAX_NDIM = 16
_MAX_ELEMENTS = 2**40


def _is_index(value: Any, n: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < n


# ---------------------------------------------------------------- the file


def _tensor_bytes(t: torch.Tensor) -> bytes:
    if dtype_name(t.dtype) not in DTYPES:
        raise ArtifactError(
            f"checkpoint: tensor dtype {dtype_name(t.dtype)} is not storable; allowed: {', '.join(DTYPES)}"
        )
    return host_bytes(t).tobytes()


def write_checkpoint(path: str | os.PathLike[str], state: Any, meta: dict[str, Any]) -> int:
    """Write ``state`` (nested dicts/lists/tuples of tensors and numbers) and the JSON
    ``meta`` to ``path`` atomically (replacing an older checkpoint); returns the file size."""
    if struct.pack("=I", 1) != struct.pack("<I", 1):
        raise ArtifactError(f"{path}: checkpoints are written little-endian; this host is big-endian")
    nodes, tensors = encode_tree(state)
    chunks, specs, offset = [], [], 0
    for t in tensors:
        data = _tensor_bytes(t)
        specs.append(
            {"dtype": dtype_name(t.dtype), "shape": list(t.shape), "offset": offset, "nbytes": len(data)}
        )
        chunks.append(data)
        offset += len(data)
    header = {"format": FORMAT_NAME, "meta": meta, "state": nodes, "tensors": specs, "body_bytes": offset}
    try:
        head = json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{path}: checkpoint meta is not plain JSON: {exc}") from None
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    write_atomic(Path(path), [_HEADER.pack(MAGIC, FORMAT_VERSION, len(head)), head, digest.digest(), *chunks])
    return _HEADER.size + len(head) + DIGEST_BYTES + offset


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """(state, meta) of the checkpoint at ``path``, validated before anything is used."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read checkpoint: {exc.strerror}") from None
    header, body = _split(path, blob)
    tensors = [_decode_tensor(path, i, spec, body) for i, spec in enumerate(header["tensors"])]
    return decode_tree(header["state"], tensors, f"{path}: state"), header["meta"]


def _upgrade_paths(value: Any) -> Any:
    """Class paths in a checkpoint's config and plugin keys, as they read after a move."""
    if isinstance(value, dict):
        return {
            k: current_class_path(v) if k == "_class" and isinstance(v, str) else _upgrade_paths(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_upgrade_paths(v) for v in value]
    return value


def _upgrade_key(key: str) -> str:
    index, sep, path = key.partition(":")
    return f"{index}{sep}{current_class_path(path)}"


def _upgrade_meta(meta: dict[str, Any]) -> dict[str, Any]:
    out = dict(meta)
    if "config" in out:
        out["config"] = _upgrade_paths(out["config"])
    if isinstance(out.get("observers"), list):
        out["observers"] = [_upgrade_key(k) if isinstance(k, str) else k for k in out["observers"]]
    return out


def read_checkpoint_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The validated ``meta`` of the checkpoint at ``path`` (header only; the body is not read)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(_HEADER.size)
            size = os.fstat(f.fileno()).st_size
            hlen = _HEADER.unpack(head)[2] if len(head) == _HEADER.size else 0
            blob = head + f.read(min(hlen, _MAX_HEADER) + DIGEST_BYTES)
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read checkpoint: {exc.strerror}") from None
    header, _ = _split(path, blob, body_size=size - len(blob))
    return _upgrade_meta(header["meta"])


def _split(path: Path, blob: bytes, body_size: int | None = None) -> tuple[dict, memoryview]:
    if len(blob) < _HEADER.size:
        raise ArtifactError(f"{path}: checkpoint is truncated ({len(blob)} bytes)")
    magic, version, hlen = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        hint = (
            " (a pickle/torch.save file? those are never loaded)"
            if blob[:1] == b"\x80" or blob[:2] == b"PK"
            else ""
        )
        raise ArtifactError(f"{path}: is not a pgolf checkpoint (magic {magic!r}, expected {MAGIC!r}){hint}")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: checkpoint format version {version} is not supported (expected {FORMAT_VERSION})"
        )
    start = _HEADER.size + hlen + DIGEST_BYTES
    if hlen > _MAX_HEADER or start > len(blob):
        raise ArtifactError(
            f"{path}: checkpoint is truncated "
            f"(header of {hlen} bytes + digest do not fit in {len(blob)} bytes)"
        )
    try:
        header = json.loads(blob[_HEADER.size : _HEADER.size + hlen].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and integers past Python's digit limit;
        # RecursionError a hostile, deeply nested header.
        raise ArtifactError(
            f"{path}: checkpoint header is not valid UTF-8 JSON: {type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    _validate_header(path, header)
    body = memoryview(blob)[start:]
    if body_size is not None:  # header only: the body's size was measured, not read
        if body_size != header["body_bytes"]:
            raise ArtifactError(
                f"{path}: checkpoint body is {body_size} bytes, "
                f"the header says {header['body_bytes']} (truncated or extended)"
            )
        return header, body
    if len(body) != header["body_bytes"]:
        raise ArtifactError(
            f"{path}: checkpoint body is {len(body)} bytes, "
            f"the header says {header['body_bytes']} (truncated or extended)"
        )
    if hashlib.sha256(body).digest() != blob[start - DIGEST_BYTES : start]:
        raise ArtifactError(f"{path}: checkpoint body sha256 mismatch (the file is corrupt or was modified)")
    return header, body


def _validate_header(path: Path, h: Any) -> None:
    if not isinstance(h, dict) or set(h) != _HEADER_KEYS:
        got = sorted(h) if isinstance(h, dict) else type(h).__name__
        raise ArtifactError(f"{path}: checkpoint header keys must be {sorted(_HEADER_KEYS)}, got {got}")
    if h["format"] != FORMAT_NAME:
        raise ArtifactError(f"{path}: checkpoint format: expected {FORMAT_NAME!r}, got {h['format']!r}")
    if not isinstance(h["meta"], dict) or not isinstance(h["tensors"], list):
        raise ArtifactError(f"{path}: checkpoint header: meta must be an object and tensors a list")
    offset = 0
    for i, spec in enumerate(h["tensors"]):
        offset += _validate_spec(path, i, spec, offset)
    if h["body_bytes"] != offset:
        raise ArtifactError(
            f"{path}: checkpoint body_bytes {h['body_bytes']!r} != {offset}, the sum of the tensor sizes"
        )


def _validate_spec(path: Path, i: int, spec: Any, offset: int) -> int:
    where = f"{path}: tensors[{i}]"
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "offset", "nbytes"}:
        raise ArtifactError(f"{where}: expected keys dtype, shape, offset, nbytes")
    if not isinstance(spec["dtype"], str) or spec["dtype"] not in DTYPES:
        raise ArtifactError(f"{where}: dtype {str(spec['dtype'])[:100]!r} is not one of {', '.join(DTYPES)}")
    shape = spec["shape"]
    if (
        not isinstance(shape, list)
        or len(shape) > _MAX_NDIM
        or not all(_is_index(d, _MAX_ELEMENTS + 1) for d in shape)
        or math.prod(max(d, 1) for d in shape) > _MAX_ELEMENTS
    ):
        raise ArtifactError(
            f"{where}: shape must be a list of at most {_MAX_NDIM} non-negative integers with at most "
            f"{_MAX_ELEMENTS} elements (zero-sized dimensions aside), got {str(shape)[:200]}"
        )
    itemsize = torch.empty((), dtype=DTYPES[spec["dtype"]]).element_size()
    expected = math.prod(shape) * itemsize
    if spec["nbytes"] != expected or spec["offset"] != offset:
        raise ArtifactError(
            f"{where}: nbytes/offset {spec['nbytes']!r}/{spec['offset']!r}, expected {expected}/{offset}"
        )
    return expected


def _decode_tensor(path: Path, i: int, spec: dict, body: memoryview) -> torch.Tensor:
    dtype = DTYPES[spec["dtype"]]
    if spec["nbytes"] == 0:
        return torch.empty(spec["shape"], dtype=dtype)
    buf = np.frombuffer(body, dtype=np.uint8, count=spec["nbytes"], offset=spec["offset"]).copy()
    if spec["dtype"] == "bool" and int(buf.max()) > 1:
        raise ArtifactError(f"{path}: tensors[{i}]: bool tensor holds bytes other than 0 and 1")
    return torch.from_numpy(buf).view(dtype).reshape(spec["shape"])


# ---------------------------------------------------------------- RNG


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every generator a run may draw from: Python, numpy, torch CPU (and CUDA)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    out: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what `rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# ---------------------------------------------------------------- config comparison


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key in sorted(value):
            yield from _flatten(value[key], f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), value


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted fields whose values differ (``RESUME_MAY_DIFFER`` excluded), as ``key: a -> b``."""
    a, b = dict(_flatten(saved)), dict(_flatten(current))
    for key, default in ADDED_WITH_DEFAULTS.items():
        if key in b and not any(k == key or k.startswith(key + ".") for k in a):
            a[key] = default
    out = []
    for key in sorted(set(a) | set(b)):
        if key not in RESUME_MAY_DIFFER and a.get(key, "<absent>") != b.get(key, "<absent>"):
            out.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
    return out


def check_resumable(meta: dict[str, Any], path: Path, config_json: dict[str, Any], world_size: int) -> None:
    """`ConfigError` unless the checkpoint ``meta`` comes from this config and world size."""
    if meta.get("world_size") != world_size:
        raise ConfigError(
            f"{path}: saved with world_size {meta.get('world_size')}, resuming with {world_size}; "
            "use the same number of processes"
        )
    diffs = config_differences(meta.get("config", {}), config_json)
    if diffs:
        raise ConfigError(
            f"{path}: the resolved config differs from the checkpointed run's: {'; '.join(diffs)}"
        )


def check_resume_dir(run_dir: Path, config: RunConfig, world_size: int) -> int:
    """Check, before anything is written, that ``run_dir`` can be resumed with ``config``;
    returns the checkpoint's step."""
    path = Path(run_dir) / CHECKPOINT_NAME
    meta = read_checkpoint_meta(path)
    check_resumable(meta, path, json.loads(dumps(config)), world_size)
    return int(meta["step"])


# ---------------------------------------------------------------- the run's checkpointer


def shard_path(run_dir: Path, step: int, rank: int) -> Path:
    """Rank ``rank``'s (> 0) file for the checkpoint of ``step``."""
    return Path(run_dir) / f"checkpoint.step{step}.rank{rank}.pgck"


def _observer_key(index: int, plugin: Any) -> str:
    return f"{index}:{type(plugin).__module__}.{type(plugin).__name__}"


def _stateful(observers: list[Any]) -> dict[str, Any]:
    return {_observer_key(i, p): p for i, p in enumerate(observers) if isinstance(p, Stateful)}


def _json_notes(notes: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able notes plugins left in ``ctx.notes``."""
    out = {}
    for key, value in notes.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            continue
        out[key] = value
    return out


class Checkpointer:
    """Saves and restores one run's training state in its run folder (see the module doc).

    ``observers`` are the run's observer plugin objects, in ``RunConfig.plugins`` order.
    """

    def __init__(
        self, run_dir: Path, config: RunConfig, dist: DistInfo, *, loader: Any, observers: list[Any]
    ) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / CHECKPOINT_NAME
        self.config_json = json.loads(dumps(config))
        self.dist = dist
        self.loader = loader
        self.observers = _stateful(observers)
        self.stateless = [
            _observer_key(i, p) for i, p in enumerate(observers) if _observer_key(i, p) not in self.observers
        ]
        """Run plugins that are not `Stateful`: on resume they start afresh (logged by
        `harness.pipeline.resume.TrainingCheckpoints.begin`)."""

    def _meta(self, step: int) -> dict[str, Any]:
        return {
            "step": step,
            "world_size": self.dist.world_size,
            "config": self.config_json,
            "observers": sorted(self.observers),
        }

    def save(self, ctx: TrainContext, trainer_state: dict[str, Any]) -> int:
        """Write this step's checkpoint (every rank calls it; they stay in lockstep); returns
        rank 0's file size (0 on other ranks)."""
        step = int(trainer_state["step"])
        rank_part = {"optimizer": ctx.optimizer.state_dict(), "rng": rng_state(self.dist.device)}
        if self.dist.rank > 0:
            write_checkpoint(shard_path(self.run_dir, step, self.dist.rank), rank_part, self._meta(step))
        barrier(self.dist)
        size = 0
        if self.dist.is_main:
            state = {
                **rank_part,
                "model": dict(ctx.model.state_dict()),
                "observers": {key: p.state_dict() for key, p in self.observers.items()},
                "loader": self.loader.state(),
                "trainer": dict(trainer_state),
                "extras": _json_notes(ctx.notes),  # the on-disk key predates the rename
            }
            size = write_checkpoint(self.path, state, self._meta(step))
        barrier(self.dist)
        if self.dist.rank > 0:
            self._drop_stale_shards(step)
        return size

    def _drop_stale_shards(self, keep: int) -> None:
        for old in self.run_dir.glob(f"checkpoint.step*.rank{self.dist.rank}.pgck"):
            if old != shard_path(self.run_dir, keep, self.dist.rank):
                old.unlink(missing_ok=True)

    def load(self, ctx: TrainContext) -> dict[str, Any]:
        """Restore model, optimizer, observers, RNG, loader and extras; return the trainer state.

        The checkpoint must come from the same resolved config (``RESUME_MAY_DIFFER`` aside)
        and the same world size; otherwise a `ConfigError` lists what differs.
        """
        if not self.path.is_file():
            raise ConfigError(
                f"{self.path}: no checkpoint to resume from (was train.checkpoint_every_minutes > 0?)"
            )
        state, meta = read_checkpoint(self.path)
        meta = _upgrade_meta(meta)
        if isinstance(state.get("observers"), dict):
            state["observers"] = {_upgrade_key(k): v for k, v in state["observers"].items()}
        self._check(meta)
        if self.dist.rank > 0:
            shard = shard_path(self.run_dir, meta["step"], self.dist.rank)
            mine, shard_meta = read_checkpoint(shard)
            if shard_meta.get("step") != meta["step"]:
                raise ArtifactError(
                    f"{shard}: holds step {shard_meta.get('step')}, but {self.path} is step {meta['step']}"
                )
            state = {**state, **mine}
        self._restore(ctx, state)
        return dict(state["trainer"])

    def _check(self, meta: dict[str, Any]) -> None:
        check_resumable(meta, self.path, self.config_json, self.dist.world_size)
        if sorted(meta.get("observers", [])) != sorted(self.observers):
            raise ConfigError(
                f"{self.path}: checkpointed plugin states {meta.get('observers')} "
                f"do not match this run's {sorted(self.observers)}"
            )

    def _restore(self, ctx: TrainContext, state: dict[str, Any]) -> None:
        try:
            ctx.model.load_state_dict(state["model"], strict=True)
            ctx.optimizer.load_state_dict(state["optimizer"])
            for key, plugin in self.observers.items():
                plugin.load_state_dict(state["observers"][key])
            self.loader.reset({k: int(v) for k, v in state["loader"].items()})
            set_rng_state(state["rng"], self.dist.device)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ArtifactError(
                f"{self.path}: checkpoint state does not fit this run: {type(exc).__name__}: {exc}"
            ) from None
        ctx.notes.update(state.get("extras", {}))
