"""Shared pieces of the loader fuzz tests: a seeded byte/JSON mutator, a per-input time and
memory guard, and an outcome tally printed at the end of each test (run with ``-s``).

The mutation kinds follow the classic dumb-fuzzing repertoire (bit flips, byte
substitution with "interesting" values, truncation, chunk insertion/duplication/deletion,
integer-field overwrites, as in AFL's deterministic stages) plus format-aware ones that each
test file adds (re-serialised manifests, headers with consistent checksums). Every input
must end in a successful, sane load or a `harness.api.errors.PgolfError`; anything else is a
loader bug. Counts: ``PGOLF_FUZZ_N`` scales the ``fuzz``-marked runs (default 10x the
default-suite count).
"""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import random
import resource
import signal
import struct
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.api.errors import PgolfError

MAX_SECONDS_PER_INPUT = 2.0
HANG_SECONDS = 20.0
"""A real hang is interrupted (SIGALRM) after this long and reported, so the suite never stalls."""
MAX_PY_PEAK_BYTES = 256 * 2**20
"""Python-side allocation peak allowed for one input (tracemalloc); a bomb would blow past it."""
MAX_RSS_GROWTH_BYTES = 512 * 2**20
"""Process RSS growth allowed over a whole batch (ru_maxrss; catches native allocations)."""

INTERESTING_INTS = (0, 1, -1, 2**7, 2**8 - 1, 2**15 - 1, 2**16 - 1, 2**31 - 1, 2**31, 2**32 - 1, 2**63 - 1)
HOSTILE_JSON_VALUES: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    -1,
    1.5,
    -(2**63),
    2**64,
    10**30,
    1e308,
    float("nan"),
    float("inf"),
    "",
    "x" * 10_000,
    "<script>alert(1)</script>",
    "a|b\n| x |",
    [],
    {},
    [1, 2, 3],
    {"k": "v"},
)


def fuzz_count(request: pytest.FixtureRequest, default: int) -> int:
    """The count of a long (``fuzz``-marked) run: ``PGOLF_FUZZ_N``, else 10x ``default``.

    The default suite runs every marker, so a long run is skipped unless it was asked for
    (``-m fuzz`` or ``PGOLF_FUZZ_N`` set)."""
    if "PGOLF_FUZZ_N" not in os.environ and "fuzz" not in (request.config.getoption("-m") or ""):
        pytest.skip("long fuzz run: select it with -m fuzz or set PGOLF_FUZZ_N")
    return int(os.environ.get("PGOLF_FUZZ_N", str(10 * default)))


class PickleBomb:
    """Pickles to a payload that would create ``marker`` if anything ever unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def pickle_payload(marker: Path) -> bytes:
    """A pickle of a dict holding a `PickleBomb` (what ``torch.save`` output boils down to)."""
    return pickle.dumps({"state_dict": PickleBomb(marker)}, protocol=5)


@dataclass
class Mutator:
    """Deterministic mutations of bytes and JSON values driven by one ``random.Random``."""

    rng: random.Random

    # -- bytes ------------------------------------------------------------------------
    def bytes_(self, data: bytes, protect: int = 0) -> tuple[str, bytes]:
        """(kind, mutated) for one random byte-level mutation; ``protect`` leading bytes are
        left alone by the in-place kinds, so header-valid inputs reach the body."""
        kind = self.rng.choice(
            (
                "bitflip",
                "bitflip",
                "substitute",
                "truncate",
                "insert",
                "duplicate",
                "delete",
                "int_field",
                "append",
            )
        )
        return kind, getattr(self, f"_{kind}")(bytearray(data), protect)

    def _pos(self, buf: bytearray, protect: int) -> int:
        lo = min(protect, max(len(buf) - 1, 0))
        return self.rng.randrange(lo, max(len(buf), lo + 1))

    def _bitflip(self, buf: bytearray, protect: int) -> bytes:
        for _ in range(self.rng.randint(1, 8)):
            if buf:
                buf[self._pos(buf, protect) % len(buf)] ^= 1 << self.rng.randrange(8)
        return bytes(buf)

    def _substitute(self, buf: bytearray, protect: int) -> bytes:
        for _ in range(self.rng.randint(1, 16)):
            if buf:
                buf[self._pos(buf, protect) % len(buf)] = self.rng.choice(
                    (0, 0xFF, 0x7F, 0x80, self.rng.randrange(256))
                )
        return bytes(buf)

    def _truncate(self, buf: bytearray, protect: int) -> bytes:
        return bytes(buf[: self.rng.randrange(0, len(buf) + 1)])

    def _chunk(self, buf: bytearray) -> tuple[int, int]:
        start = self.rng.randrange(0, len(buf) + 1)
        return start, min(len(buf), start + self.rng.choice((1, 4, 16, 256, 4096)))

    def _insert(self, buf: bytearray, protect: int) -> bytes:
        at = self._pos(buf, protect)
        return bytes(buf[:at] + self.rng.randbytes(self.rng.choice((1, 8, 100, 5000))) + buf[at:])

    def _duplicate(self, buf: bytearray, protect: int) -> bytes:
        start, end = self._chunk(buf)
        at = self._pos(buf, protect)
        return bytes(buf[:at] + buf[start:end] * self.rng.randint(1, 4) + buf[at:])

    def _delete(self, buf: bytearray, protect: int) -> bytes:
        start, end = self._chunk(buf)
        return bytes(buf[:start] + buf[end:])

    def _int_field(self, buf: bytearray, protect: int) -> bytes:
        return bytes(
            self.overwrite_int(buf, self._pos(buf, protect), self.rng.choice(("<I", "<i", "<Q", "<H")))
        )

    def overwrite_int(self, buf: bytearray, at: int, fmt: str) -> bytearray:
        """``buf`` with an interesting integer packed as ``fmt`` at ``at`` (clamped to fit)."""
        size = struct.calcsize(fmt)
        bits = 8 * size
        value = self.rng.choice(INTERESTING_INTS) % (2**bits)
        raw = value.to_bytes(size, "little")
        at = max(0, min(at, len(buf) - size))
        if len(buf) >= size:
            buf[at : at + size] = raw
        return buf

    def _append(self, buf: bytearray, protect: int) -> bytes:
        return bytes(buf + self.rng.randbytes(self.rng.choice((1, 32, 4096))))

    # -- JSON -------------------------------------------------------------------------
    def json_value(self, value: Any, depth: int = 0) -> Any:
        """``value`` with one random node replaced by a hostile value (or a key dropped/added)."""
        if isinstance(value, dict) and value and depth < 8 and self.rng.random() < 0.7:
            out = dict(value)
            key = self.rng.choice(sorted(out))
            roll = self.rng.random()
            if roll < 0.15:
                del out[key]
            elif roll < 0.25:
                out[self.rng.choice(("extra", "__class__", "", "val_bpb", "seeds"))] = self.hostile()
            else:
                out[key] = self.json_value(out[key], depth + 1)
            return out
        if isinstance(value, list) and value and depth < 8 and self.rng.random() < 0.7:
            out_list = list(value)
            i = self.rng.randrange(len(out_list))
            out_list[i] = self.json_value(out_list[i], depth + 1)
            return out_list
        return self.hostile()

    def hostile(self) -> Any:
        """A value of a wrong type, size or finiteness; sometimes deeply nested."""
        roll = self.rng.random()
        if roll < 0.08:
            return deep_nesting(self.rng.choice((50, 5000, 100_000)))
        if roll < 0.12:
            return HugeInt(self.rng.choice((30, 5000)))
        return self.rng.choice(HOSTILE_JSON_VALUES)


class HugeInt(int):
    """Serialised by `dumps_hostile` as a bare integer literal of ``digits`` digits."""

    def __new__(cls, digits: int) -> HugeInt:
        obj = super().__new__(cls, 7)
        obj.digits = digits
        return obj


class _Deep:
    """``depth`` nested lists, serialised lazily by `dumps_hostile` (no Python recursion)."""

    def __init__(self, depth: int) -> None:
        self.depth = depth


def deep_nesting(depth: int) -> _Deep:
    """A JSON value nested ``depth`` levels deep (``[[[...]]]``)."""
    return _Deep(depth)


def dumps_hostile(value: Any) -> str:
    """JSON text for ``value`` with NaN/Infinity allowed, `HugeInt` as long digit strings and
    `_Deep` as deep nesting (what a hostile writer can put in a file)."""
    marks: dict[str, str] = {}

    def enc(v: Any) -> Any:
        if isinstance(v, HugeInt):
            tag = f"@@{len(marks)}@@"
            marks[tag] = "9" * v.digits
            return tag
        if isinstance(v, _Deep):
            tag = f"@@{len(marks)}@@"
            marks[tag] = "[" * v.depth + "]" * v.depth
            return tag
        if isinstance(v, dict):
            return {str(k): enc(x) for k, x in v.items()}
        if isinstance(v, list):
            return [enc(x) for x in v]
        return v

    text = json.dumps(enc(value), allow_nan=True)
    for tag, literal in marks.items():
        text = text.replace(json.dumps(tag), literal)
    return text


class Hang(BaseException):
    """Raised by the alarm inside a stuck load (a BaseException: loaders cannot swallow it)."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise Hang(f"no result after {HANG_SECONDS}s")


def _origin(exc: BaseException) -> str:
    """``file:line`` of the innermost frame of the project that raised ``exc``."""
    tb, where = exc.__traceback__, "?"
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if "/harness/" in name or "/plugins/" in name:
            where = f"{Path(name).parent.name}/{Path(name).name}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


@dataclass
class Tally:
    """Outcomes of one fuzz batch: ``ok`` loads and clean errors by exception type."""

    name: str
    outcomes: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    slowest_s: float = 0.0
    py_peak: int = 0
    peak_kind: str = ""

    def run(self, kind: str, load: Callable[[], Any], check: Callable[[Any], None] | None = None) -> None:
        """Call ``load()`` once under the time/memory guard and record what happened."""
        self.kinds[kind] += 1
        tracemalloc.reset_peak()
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
        t0 = time.perf_counter()
        try:
            result = load()
        except Hang as exc:
            outcome = "BUG:hang"
            self.failures.append(f"{kind}: {exc}")
        except PgolfError as exc:
            outcome = type(exc).__name__
            if not str(exc).strip():
                self.failures.append(f"{kind}: {outcome} with an empty message")
        except Exception as exc:  # noqa: BLE001 - any other type is the bug being hunted
            outcome = f"BUG:{type(exc).__name__}"
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            self.failures.append(f"{kind}: {type(exc).__name__}: {first} (at {_origin(exc)})")
        else:
            outcome = "ok"
            if check is not None:
                try:
                    check(result)
                except AssertionError as exc:
                    self.failures.append(f"{kind}: loaded but not sane: {exc}")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        elapsed = time.perf_counter() - t0
        self.slowest_s = max(self.slowest_s, elapsed)
        peak = tracemalloc.get_traced_memory()[1]
        if peak > self.py_peak:
            self.py_peak, self.peak_kind = peak, kind
        if elapsed > MAX_SECONDS_PER_INPUT:
            self.failures.append(f"{kind}: took {elapsed:.2f}s (> {MAX_SECONDS_PER_INPUT}s)")
        self.outcomes[outcome] += 1

    def report(self) -> str:
        """One line: counts by outcome and by mutation kind, slowest input, Python peak."""
        total = sum(self.outcomes.values())
        outs = ", ".join(f"{k}={v}" for k, v in sorted(self.outcomes.items()))
        kinds = ", ".join(f"{k}={v}" for k, v in sorted(self.kinds.items()))
        return (
            f"[fuzz] {self.name}: {total} inputs; outcomes: {outs}; mutations: {kinds}; "
            f"slowest {self.slowest_s * 1000:.0f} ms; "
            f"python peak {self.py_peak / 2**20:.1f} MiB ({self.peak_kind})"
        )


@pytest.fixture
def tally_guard(request) -> Iterator[Callable[[str], Tally]]:
    """Make tallies for a test; after it, print them and fail on any bug, slow input, or
    memory blow-up (tracemalloc peak per input; process max RSS over the test)."""
    tallies: list[Tally] = []
    tracemalloc.start()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB

    def make(name: str) -> Tally:
        tallies.append(Tally(name))
        return tallies[-1]

    try:
        yield make
    finally:
        tracemalloc.stop()
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
    failures = []
    for t in tallies:
        print(t.report())
        distinct = Counter(t.failures)
        failures += [f"{t.name}: {n}x {f}" for f, n in distinct.most_common(20)]
        if t.py_peak > MAX_PY_PEAK_BYTES:
            failures.append(f"{t.name}: python allocation peak {t.py_peak / 2**20:.0f} MiB for one input")
    if rss_growth > MAX_RSS_GROWTH_BYTES:
        failures.append(f"max RSS grew by {rss_growth / 2**20:.0f} MiB during the batch")
    assert not failures, "\n".join(failures)
