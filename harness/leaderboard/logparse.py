"""Read a Parameter Golf train log (upstream families A and B, and our own pgolf ``train.log``)
into a `LogSummary`: the final score lines, steps, timing, sizes and the seed.

Formats and hazards follow docs/protocol.md §9.1 and §9.3 (upstream ``openai/parameter-golf``
records): family A ``step:S/N train_loss:X … step_avg:Fms`` (baseline ``train_gpt.py``),
family B ``S/N train_loss: X train_time: F.Fm`` (PR #1394 lineage), Unix-epoch prefixes,
embedded source code with f-string templates, torchrun warnings and nvidia-smi tables.
Only text is read; nothing here executes anything a log names.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

# Integers a real log can hold; longer digit runs (a hostile or corrupt line) do not match,
# so they never reach int(), which refuses strings over 4,300 digits.
_INT = r"\d{1,18}(?!\d)"
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|nan|inf|-inf"
_EPOCH_PREFIX = re.compile(r"^\d{9,11}(?:\.\d+)?\s+")
_FINAL_NAME = re.compile(r"^(?P<name>(?:final_|quantized|legal_ttt)[\w.+-]*)(?=\s|$)")
_VAL_LOSS = re.compile(rf"(?:^|\s)val_loss:\s*(?P<v>{_NUM})(?=\s|$|,)")
_VAL_BPB = re.compile(rf"(?:^|\s)val_bpb:\s*(?P<v>{_NUM})(?=\s|$|,)")
_STOP = re.compile(
    rf"^stopping_early:.*?train_time:\s*(?P<ms>\d+(?:\.\d+)?)ms\s+step:\s*(?P<s>{_INT})/(?P<n>{_INT})"
)
_STEP_A = re.compile(rf"^step:(?P<s>{_INT})/(?P<n>{_INT})\s+(?:train_loss|val_loss):")
_STEP_A_TIME = re.compile(r"\strain_time:(?P<ms>\d+(?:\.\d+)?)ms")
_STEP_A_AVG = re.compile(r"\sstep_avg:(?P<avg>\d+(?:\.\d+)?)ms")
_STEP_B = re.compile(rf"^(?P<s>{_INT})/(?P<n>{_INT})\s+(?:train_loss|val_loss):\s")
_STEP_B_TIME = re.compile(r"\strain_time:\s*(?P<m>\d+(?:\.\d+)?)m(?:\s|$)")
_TOTAL = re.compile(rf"^Total submission size[^:]*:\s*(?P<b>{_INT})\s*bytes")
_CODE = re.compile(rf"^Code size(?:\s*\((?P<kind>compressed|uncompressed)\))?:\s*(?P<b>{_INT})\s*bytes")
_PARAMS = re.compile(rf"^model_params:\s*(?P<p>{_INT})")
_SEED = re.compile(rf"^\s*seed:\s*(?P<seed>{_INT})\s*$")
_PGOLF = re.compile(r"^run_id:\S+\s+run_dir:")
_EVAL_MODE = re.compile(r"^final_eval_mode:\s*(?P<mode>\S+)")
_DECIMALS = re.compile(r"\.(\d+)")

PROTOCOLS = ("ttt", "sliding", "roundtrip")
"""Evaluation protocols of a final score line, best first: test-time training, sliding window,
plain (roundtrip) evaluation of the artifact (docs/protocol.md §10.3)."""

# Pre-quantization numbers are not a submission's score (docs/protocol.md §8.3: DGAttention's
# claimed value was the pre-quant one), so they never count as support.
_NOT_A_SCORE = ("prequant", "pre_quant")


@dataclass(frozen=True)
class ScoreLine:
    """One final score line of a log, with the evaluation protocol it reports."""

    name: str
    loss: float | None
    bpb: float
    protocol: str
    """One of `PROTOCOLS` (see `classify`)."""
    decimals: int
    """Decimals the line printed for val_bpb (8 on ``_exact`` lines, often 4 otherwise)."""


@dataclass
class LogSummary:
    """What one train log says about its run."""

    finals: dict[str, tuple[float | None, float]] = field(default_factory=dict)
    """Final score lines, name -> (val_loss, val_bpb); the last occurrence of a name wins."""
    final_lines: list[tuple[str, float | None, float]] = field(default_factory=list)
    """Every final score line in order (a name can repeat with other numbers)."""
    steps: int | None = None
    iterations: int | None = None
    train_time_ms: float | None = None
    ms_per_step: float | None = None
    total_bytes: int | None = None
    """The LAST ``Total submission size …: N bytes`` line (earlier ones are raw fp32 totals)."""
    scores: list[ScoreLine] = field(default_factory=list)
    """Every final line that can be a score (pre-quantization lines left out), in order."""
    code_bytes: int | None = None
    model_params: int | None = None
    seed: str | None = None
    truncated: bool = True
    """No final score line: the run or its log stopped before scoring."""
    family: str = "unknown"
    """"A", "B", "pgolf" or "unknown" (docs/protocol.md §9.1, §9.3)."""


@dataclass
class _Scan:
    """Mutable state while scanning lines (kept apart from the public summary)."""

    out: LogSummary = field(default_factory=LogSummary)
    stop: tuple[int, int, float] | None = None
    last_a: tuple[int, int, float | None, float | None] | None = None
    last_b: tuple[int, int, float | None] | None = None
    code: dict[str, int] = field(default_factory=dict)
    pgolf: bool = False
    eval_mode: str = ""
    """The last ``final_eval_mode:`` value (legacy scripts print sliding-window results under
    roundtrip names after ``final_eval_mode:sliding_window``)."""
    protocol_of: dict[str, str] = field(default_factory=dict)
    """Protocol of each rounded line, inherited by its ``<name>_exact`` twin."""


def clean_line(raw: str) -> str | None:
    """The line without its epoch-timestamp prefix, or None when it cannot be a log line
    (embedded source with ``{`` templates)."""
    if "{" in raw:
        return None
    return _EPOCH_PREFIX.sub("", raw.rstrip("\r\n"), count=1)


def _num(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def classify(name: str, rest: str, eval_mode: str = "", inherited: str | None = None) -> str | None:
    """The protocol of a final line named ``name`` with the text ``rest`` after the name:
    None for a pre-quantization line; "ttt" when the name or the text says ``ttt``; "sliding"
    when it says ``sliding`` or gives a ``stride:``; else what its rounded twin was (an
    ``_exact`` line repeats the line before it with 8 decimals), "sliding" after a
    ``final_eval_mode:sliding_window`` line, and "roundtrip" otherwise. The name alone is
    not trusted: ``final_int8_zlib_roundtrip_exact`` was reprinted with sliding-window and
    TTT numbers (docs/protocol.md §9.3)."""
    low, text = name.lower(), rest.lower()
    if any(tag in low for tag in _NOT_A_SCORE):
        return None
    if "ttt" in low or "ttt" in text:
        return "ttt"
    if "sliding" in low or "sliding" in text or "stride:" in text:
        return "sliding"
    if inherited:
        return inherited
    return "sliding" if eval_mode.startswith("sliding") else "roundtrip"


def _score_line(line: str, hit: tuple[str, float | None, float], scan: _Scan) -> ScoreLine | None:
    name, loss, bpb = hit
    rest = line[len(name) :]
    base = name.removesuffix("_exact") if name.endswith("_exact") else None
    protocol = classify(name, rest, scan.eval_mode, scan.protocol_of.get(base) if base else None)
    if protocol is None:
        return None
    scan.protocol_of[name] = protocol
    text = _VAL_BPB.search(line)
    digits = _DECIMALS.search(text.group("v")) if text else None
    return ScoreLine(name, loss, bpb, protocol, len(digits.group(1)) if digits else 0)


def final_score(summary: LogSummary, protocol: str) -> ScoreLine | None:
    """The log's final score for ``protocol``: its last ``_exact`` line of that protocol, else
    its last line of that protocol (a log holding two runs reports the second)."""
    lines = [s for s in summary.scores if s.protocol == protocol]
    exact = [s for s in lines if s.name.endswith("_exact")]
    return (exact or lines or [None])[-1]


def protocols(summary: LogSummary) -> list[str]:
    """The protocols this log has a score line for, best first (`PROTOCOLS` order)."""
    found = {s.protocol for s in summary.scores}
    return [p for p in PROTOCOLS if p in found]


def _final(line: str) -> tuple[str, float | None, float] | None:
    m = _FINAL_NAME.match(line)
    if not m:
        return None
    bpb = _VAL_BPB.search(line)
    if not bpb or _num(bpb.group("v")) is None:
        return None
    loss = _VAL_LOSS.search(line)
    return m.group("name"), (_num(loss.group("v")) if loss else None), float(bpb.group("v"))


def _steps(line: str, scan: _Scan) -> bool:
    m = _STOP.match(line)
    if m:
        scan.stop = (int(m.group("s")), int(m.group("n")), float(m.group("ms")))
        return True
    m = _STEP_A.match(line)
    if m:
        t, a = _STEP_A_TIME.search(line), _STEP_A_AVG.search(line)
        scan.last_a = (
            int(m.group("s")),
            int(m.group("n")),
            float(t.group("ms")) if t else None,
            float(a.group("avg")) if a else None,
        )
        return True
    m = _STEP_B.match(line)
    if m:
        t = _STEP_B_TIME.search(line)
        # Family B prints minutes with one decimal: good for the family, too coarse for timing.
        scan.last_b = (int(m.group("s")), int(m.group("n")), 60_000.0 * float(t.group("m")) if t else None)
        return True
    return False


def _facts(line: str, scan: _Scan) -> None:
    out = scan.out
    if m := _TOTAL.match(line):
        out.total_bytes = int(m.group("b"))
    elif m := _CODE.match(line):
        scan.code[m.group("kind") or "plain"] = int(m.group("b"))
    elif m := _PARAMS.match(line):
        out.model_params = int(m.group("p"))
    elif (m := _SEED.match(line)) and out.seed is None:
        out.seed = m.group("seed")
    elif _PGOLF.match(line):
        scan.pgolf = True


def _finish(scan: _Scan) -> LogSummary:
    out = scan.out
    out.truncated = not out.final_lines
    out.family = "pgolf" if scan.pgolf else "A" if scan.last_a else "B" if scan.last_b else "unknown"
    # docs/protocol.md §9.3: when both are logged, the compressed code size is the one in the total.
    out.code_bytes = scan.code.get("compressed", scan.code.get("plain", scan.code.get("uncompressed")))
    if scan.stop:
        out.steps, out.iterations, out.train_time_ms = scan.stop
    elif scan.last_a:
        out.steps, out.iterations, out.train_time_ms = scan.last_a[0], scan.last_a[1], scan.last_a[2]
    elif scan.last_b:
        out.steps, out.iterations, out.train_time_ms = scan.last_b
    if scan.last_a and scan.last_a[3] is not None:
        out.ms_per_step = scan.last_a[3]  # family A / pgolf print the running average
    elif out.train_time_ms is not None and out.steps:
        out.ms_per_step = out.train_time_ms / out.steps  # family B: only derivable (docs/protocol.md §9.3)
    return out


def parse_log(text: str) -> LogSummary:
    """Parse one train log's text; never raises on odd content (unknown lines are skipped)."""
    scan = _Scan()
    for raw in text.splitlines():
        line = clean_line(raw)
        if not line:
            continue
        hit = _final(line)
        if hit:
            scan.out.final_lines.append(hit)
            scan.out.finals[hit[0]] = (hit[1], hit[2])
            score = _score_line(line, hit, scan)
            if score is not None:
                scan.out.scores.append(score)
            continue
        if m := _EVAL_MODE.match(line):
            scan.eval_mode = m.group("mode").lower()
            continue
        if not _steps(line, scan):
            _facts(line, scan)
    return _finish(scan)


def decimals(value: float) -> int:
    """How many decimals ``value`` was written with (its shortest repr, as JSON stores it)."""
    exp = Decimal(repr(float(value))).as_tuple().exponent
    return max(0, -exp) if isinstance(exp, int) else 0


def round_half_up(value: float, places: int) -> Decimal:
    """``value`` rounded half-up on its decimal text (1.09785 -> 1.0979), not binary rounding."""
    return Decimal(repr(float(value))).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def matches(score: float, value: float, tol: float = 1e-5) -> bool:
    """True when ``value`` (a log number or a mean of them) shows ``score``: equal after
    half-up rounding to the score's decimals, or within ``tol``."""
    try:
        if round_half_up(value, decimals(score)) == Decimal(repr(float(score))):
            return True
    except InvalidOperation:
        return False
    return abs(float(value) - float(score)) <= tol + 1e-12


def is_score_line(name: str) -> bool:
    """Whether a final line can carry a submission's score (pre-quant lines cannot)."""
    return not any(tag in name for tag in _NOT_A_SCORE)


def supporting_lines(score: float, summary: LogSummary, tol: float = 1e-5) -> list[str]:
    """Names of the final lines of ``summary`` whose bpb shows ``score`` (see `matches`)."""
    names = [n for n, _loss, bpb in summary.final_lines if is_score_line(n) and matches(score, bpb, tol)]
    return list(dict.fromkeys(names))


def support(score: float, summary: LogSummary, tol: float = 1e-5) -> bool:
    """Does ANY final line of this log show this bpb? The line's name says nothing reliable
    about its method (``final_int8_zlib_roundtrip_exact`` is a legacy alias, docs/protocol.md §9.3)."""
    return bool(supporting_lines(score, summary, tol))
