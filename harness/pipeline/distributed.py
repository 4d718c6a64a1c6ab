"""Process-group setup for torchrun and single-process runs (NCCL on GPU, gloo on CPU).

Follows the upstream baseline: a run is distributed only when torchrun set RANK and
WORLD_SIZE; rank r uses cuda:LOCAL_RANK. Small collectives here never use pickle
(`broadcast_object_list` would): strings travel as uint8 tensors.

Failure handling (torchrun ``--max-restarts=0`` semantics): the process group gets an
explicit collective timeout (``PGOLF_DIST_TIMEOUT_S``, default 600 s) so a collective
waiting on a dead or stuck peer fails instead of blocking forever; on CUDA, NCCL async error
handling is switched on (``TORCH_NCCL_ASYNC_ERROR_HANDLING=1``, PyTorch's documented way to
turn NCCL timeouts into process exits); and a rank that fails prints one line naming itself
and the cause (`report_rank_failure`) before it exits, so the first failure is legible even
when its peers then fail on the broken group. A rank whose peer's node died (the transport
reports the peer's sockets closed) says so in that line (`failure_cause`); torchrun's c10d
rendezvous (``--nnodes=N --rdzv-backend=c10d``) then ends every surviving node's agent, as
``tests/e2e/test_multinode.py`` measures with two agents on one machine.
"""

from __future__ import annotations

import gc
import importlib
import math
import os
import re
import signal
import sys
import threading
from datetime import timedelta

import torch
import torch.distributed as dist

from harness.api.context import DistInfo
from harness.api.errors import ConfigError, PgolfError

TIMEOUT_ENV = "PGOLF_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 600.0


def init_distributed() -> DistInfo:
    """Join the torchrun process group if there is one; pick the device."""
    cuda = torch.cuda.is_available()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        device = torch.device("cuda", 0) if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        return DistInfo(0, 1, 0, device, None)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    backend = "nccl" if cuda else "gloo"
    if cuda:
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    if not dist.is_initialized():
        # Before the group exists: the first optimizer step imports torch._dynamo lazily, which
        # imports torch.distributed.nn.functional, whose `group=group.WORLD` defaults would then
        # capture the live group; destroy_process_group could not free it, its gloo threads
        # would outlive the run and abort the process at exit ("terminate called without an
        # active exception"). Imported first, those defaults are None.
        importlib.import_module("torch._dynamo")
        dist.init_process_group(
            backend=backend, device_id=device if cuda else None, timeout=collective_timeout()
        )
    _end_quietly_on_sigterm(rank, world)
    return DistInfo(rank, world, local_rank, device, backend)


_error_printed = False


def _end_quietly_on_sigterm(rank: int, world: int) -> None:
    """torchrun's agent ends its workers with SIGTERM when the job is lost (another rank failed,
    or the node hosting the rendezvous store died): the worker then says so in one line instead
    of dying silently, and says nothing more when it already reported its own failure."""

    def on_sigterm(_signum: int, _frame: object) -> None:
        if not _error_printed:
            print(
                f"error: rank {rank}/{world} stopped by its torchrun agent (SIGTERM): another rank or "
                "node failed first, or the rendezvous store was lost",
                file=sys.stderr,
                flush=True,
            )
        os._exit(128 + signal.SIGTERM)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)


def collective_timeout(environ: dict[str, str] | None = None) -> timedelta:
    """How long a collective may wait for its peers: ``PGOLF_DIST_TIMEOUT_S`` seconds
    (default 600; it must outlast the slowest rank-0-only phase, export and evaluation)."""
    env = os.environ if environ is None else environ
    raw = env.get(TIMEOUT_ENV, "")
    if not raw.strip():
        return timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r}: expected a positive number of seconds")
    return timedelta(seconds=seconds)


PEER_GONE = ("connection reset by peer", "connection closed by peer", "broken pipe", "connection refused")
"""How gloo and the TCP store word a peer whose sockets closed: its process or its node died."""
PEER_SILENT = ("timed out", "timeout")
"""How they word a collective that outlived ``PGOLF_DIST_TIMEOUT_S``: a peer is stuck or unreachable."""
_SOURCE_LOCATION = re.compile(r"^\[[^\]]*\.(?:cc|cpp|h|hpp):\d+\]\s*")


class PeerLostError(PgolfError):
    """Another rank of a distributed run is gone or silent, as the transport reported it: what a
    dead node looks like from the others, so an expected failure (one line, no traceback)."""


def _peer_problem(exc: BaseException, message: str) -> str | None:
    if not isinstance(exc, RuntimeError) or isinstance(exc, PgolfError):  # gloo/NCCL/store errors only
        return None
    lowered = message.lower()
    if any(marker in lowered for marker in PEER_GONE):
        return "lost contact with another rank (its process or node died)"
    if any(marker in lowered for marker in PEER_SILENT):
        return f"no answer from another rank within {TIMEOUT_ENV} (stuck or unreachable)"
    return None


def failure_cause(exc: BaseException) -> str:
    """``Type: message`` on one line; a communication error that says a peer is gone or silent
    is named as such first, so the line says which node to look at (the one that is not
    printing), not just what the transport reported."""
    message = _SOURCE_LOCATION.sub("", " ".join(str(exc).split())) or "(no message)"
    cause = f"{type(exc).__name__}: {message}"
    problem = _peer_problem(exc, message)
    return f"{problem}: {cause}" if problem else cause


def peer_lost(info: DistInfo, exc: BaseException) -> PeerLostError | None:
    """The `PeerLostError` to raise instead of ``exc`` when ``exc`` is a transport error about a
    peer (None otherwise), marked as already printed by `report_rank_failure`."""
    if not info.distributed or _peer_problem(exc, str(exc)) is None:
        return None
    lost = PeerLostError(failure_cause(exc))
    lost.__dict__[_REPORTED] = True
    return lost


def report_rank_failure(info: DistInfo, exc: BaseException) -> None:
    """Print ``error: rank R/W failed: <cause>`` to stderr (one line, `failure_cause`, flushed
    at once: torchrun may kill this process's peers, and then this one, right after)."""
    if not info.distributed:
        return
    global _error_printed
    _error_printed = True
    print(
        f"error: rank {info.rank}/{info.world_size} failed: {failure_cause(exc)}",
        file=sys.stderr,
        flush=True,
    )
    try:
        exc.__dict__[_REPORTED] = True  # so the entry point does not print the same error again
    except (AttributeError, TypeError):  # exceptions without a __dict__ (rare C types)
        pass


_REPORTED = "_pgolf_rank_reported"


def already_reported(exc: BaseException) -> bool:
    """True when `report_rank_failure` already printed ``exc`` (with its rank)."""
    return bool(getattr(exc, _REPORTED, False))


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in a single process)."""
    if info.distributed:
        dist.barrier()


def all_reduce_max(value: float, info: DistInfo) -> float:
    """The maximum of ``value`` over ranks (used for the wallclock stop flag)."""
    if not info.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def broadcast_str(text: str, info: DistInfo, max_len: int = 255) -> str:
    """Rank 0's ``text`` on every rank (e.g. the run id)."""
    if not info.distributed:
        return text
    data = text.encode("utf-8")[:max_len]
    buf = torch.zeros(max_len + 1, dtype=torch.uint8, device=info.device)
    if info.is_main:
        buf[0] = len(data)
        buf[1 : 1 + len(data)] = torch.tensor(list(data), dtype=torch.uint8)
    dist.broadcast(buf, src=0)
    n = int(buf[0].item())
    return bytes(buf[1 : 1 + n].tolist()).decode("utf-8")


def shutdown(info: DistInfo, *, finished: bool = True) -> None:
    """Leave the process group.

    After a clean finish every rank first waits for the others, so no rank tears down its
    transport while a peer still talks to it. Then the garbage collector runs before the
    group is destroyed: a DDP reducer caught in a reference cycle keeps the gloo group (and
    its C++ worker threads) alive until interpreter teardown, where destroying it aborts the
    process ("terminate called without an active exception", seen in CI on a 2-rank run).
    After a failure the barrier is skipped: a peer may never reach it.
    """
    if info.backend is None or not dist.is_initialized():
        return
    if finished and info.distributed:
        dist.barrier()
    gc.collect()
    dist.destroy_process_group()
