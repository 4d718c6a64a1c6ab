"""The challenge's significance rule as code: a new record must beat the current one by at
least 0.005 nats (per token, `val_loss` units) with p < 0.01, usually over 3 seeds
(openai/parameter-golf README, "Submission Process"; docs/protocol.md §2.4, §6.5).

The test is a one-sided Welch t-test (unequal variances, Welch–Satterthwaite degrees of
freedom; B. L. Welch, Biometrika 1947) on the per-seed scores of two entries, with the margin
subtracted from the difference of means. Leaderboard scores are stored in bits per byte, so
they are converted to nats per token with the recorded tokens/byte ratio:
``nats/token = bpb · ln 2 · (bytes / tokens) = bpb · ln 2 / (tokens/byte)``.

Decisions (documented because the README leaves them open):

* Both entries' per-seed bpb are converted with the tokens/byte ratio of B, the entry being
  improved on (the rule is "beat the current record by 0.005 nats", i.e. in its units). For
  two entries on the same tokenizer and validation set this equals converting each with its
  own ratio; for different tokenizers it is the only conversion under which the two scores
  stay comparable (bpb is the tokenizer-free metric). When B's ratio is unknown A's is used.
* When neither ratio is known the 0.005-nat margin cannot be expressed in bpb, so no
  verdict is given; `compare` still prints a margin-0 Welch test in bpb, labelled as such.
* Fewer than 2 seeds on a side, or zero variance on both sides, make the t statistic
  undefined: `welch_improvement` raises `SignificanceError` (never a made-up p-value).
* Two entries whose dataset or tokenizer fingerprints are both recorded and differ, or of
  which only one is scored with the record protocol (`Entry.non_record`), get no verdict
  from `compare` (docs/protocol.md §1.7: scores are comparable only between equal
  fingerprints). Which runs an entry pools is decided before (`harness.leaderboard.pooling`).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from harness.api.errors import DataError
from harness.leaderboard.entry import Entry

LN2 = math.log(2.0)
MARGIN_NATS = 0.005
"""The README's minimum improvement, in nats per token."""
ALPHA = 0.01
"""The README's significance level."""


class SignificanceError(DataError):
    """The t-test cannot be computed; ``reason`` is a short form for table cells."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class WelchResult:
    """One-sided Welch test of H1: mean(b) − mean(a) > margin (lower is better)."""

    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    std_a: float
    """Sample standard deviation (ddof=1)."""
    std_b: float
    margin: float
    """In the units of the samples."""
    t: float
    df: float
    """Welch–Satterthwaite degrees of freedom."""
    p: float
    """P(T ≥ t) under H0: mean(b) − mean(a) = margin."""
    significant: bool
    """p < ALPHA."""


def bpb_to_nats(bpb: float, tokens_per_byte: float) -> float:
    """Bits per byte -> nats per token (docs/protocol.md §2.4)."""
    _check_ratio(tokens_per_byte)
    return bpb * LN2 / tokens_per_byte


def nats_to_bpb(nats: float, tokens_per_byte: float) -> float:
    """Nats per token -> bits per byte (inverse of `bpb_to_nats`)."""
    _check_ratio(tokens_per_byte)
    return nats * tokens_per_byte / LN2


def _check_ratio(tokens_per_byte: float) -> None:
    if not (
        isinstance(tokens_per_byte, (int, float)) and math.isfinite(tokens_per_byte) and tokens_per_byte > 0
    ):
        raise DataError(f"tokens_per_byte={tokens_per_byte!r}: expected a finite number > 0")


def _check_sample(name: str, xs: list[float]) -> None:
    if len(xs) < 2:
        raise SignificanceError(
            f"{name}: {len(xs)} score(s); the Welch t-test needs at least 2 per side to estimate a variance",
            f"{name} has {len(xs)} seed{'s' if len(xs) != 1 else ''}",
        )
    bad = [x for x in xs if not math.isfinite(x)]
    if bad:
        raise SignificanceError(f"{name}: non-finite score {bad[0]!r}", f"{name} has a non-finite score")


def welch_improvement(
    a_nats: list[float], b_nats: list[float], margin_nats: float = MARGIN_NATS
) -> WelchResult:
    """One-sided Welch t-test that A improves on B (lower is better) by more than
    ``margin_nats``: t = (mean_b − mean_a − margin) / sqrt(s_a²/n_a + s_b²/n_b), p = P(T_df ≥ t).

    Raises `SignificanceError` when a side has fewer than 2 scores or both have zero variance
    (the statistic is then undefined; no p-value is invented)."""
    from scipy import stats

    a, b = [float(x) for x in a_nats], [float(x) for x in b_nats]
    _check_sample("A", a)
    _check_sample("B", b)
    va, vb = statistics.variance(a), statistics.variance(b)
    qa, qb = va / len(a), vb / len(b)
    if qa + qb == 0.0:
        raise SignificanceError(
            "both samples have zero variance: the t statistic is undefined (no p-value computed)",
            "no variance in either row",
        )
    mean_a, mean_b = statistics.fmean(a), statistics.fmean(b)
    t = (mean_b - mean_a - margin_nats) / math.sqrt(qa + qb)
    # Welch–Satterthwaite; a zero-variance side contributes 0 to the denominator.
    df = (qa + qb) ** 2 / (qa**2 / (len(a) - 1) + qb**2 / (len(b) - 1))
    p = float(stats.t.sf(t, df))
    return WelchResult(
        n_a=len(a),
        n_b=len(b),
        mean_a=mean_a,
        mean_b=mean_b,
        std_a=math.sqrt(va),
        std_b=math.sqrt(vb),
        margin=margin_nats,
        t=t,
        df=df,
        p=p,
        significant=p < ALPHA,
    )


def seed_bpbs(entry: Entry) -> list[float]:
    """The per-seed val_bpb values of an entry (seeds without a score are skipped)."""
    return [s.val_bpb for s in entry.seeds if s.val_bpb is not None]


def conversion_ratio(a: Entry, b: Entry) -> tuple[float | None, str]:
    """The tokens/byte ratio used to convert both entries (B's, else A's) and where it came from."""
    for label, entry in (("B", b), ("A", a)):
        r = entry.tokens_per_byte
        if r is not None and math.isfinite(r) and r > 0:
            return r, f"tokens/byte {r:.6f} of {label} ({entry.key})"
    return None, "tokens/byte unknown for both entries"


def improvement(a: Entry, b: Entry, margin_nats: float = MARGIN_NATS) -> WelchResult:
    """The README rule for two leaderboard entries: does A beat B by ``margin_nats`` at
    p < 0.01? Per-seed bpb converted to nats with `conversion_ratio`. Raises
    `SignificanceError` (with a short ``reason``) when it cannot be decided."""
    ratio, _ = conversion_ratio(a, b)
    if ratio is None:
        raise SignificanceError(
            f"{a.key} vs {b.key}: tokens/byte unknown for both, "
            f"the {margin_nats} nat margin cannot be converted to bpb",
            "tokens/byte unknown",
        )
    return welch_improvement(
        [bpb_to_nats(x, ratio) for x in seed_bpbs(a)],
        [bpb_to_nats(x, ratio) for x in seed_bpbs(b)],
        margin_nats,
    )


def _seed_lines(label: str, entry: Entry, ratio: float | None) -> list[str]:
    lines = [f"{label}: {entry.key} ({entry.name}), tokens/byte {_fmt(entry.tokens_per_byte)}"]
    for s in entry.seeds:
        if s.val_bpb is None:
            lines.append(f"  seed {s.seed}: no val_bpb (not used)")
            continue
        nats = f" = {bpb_to_nats(s.val_bpb, ratio):.8f} nats/token" if ratio is not None else ""
        lines.append(f"  seed {s.seed}: val_bpb {s.val_bpb:.8f}{nats}")
    if not entry.seeds:
        lines.append("  no per-seed results")
    return lines


def _fmt(x: float | None) -> str:
    return "unknown" if x is None else f"{x:.6f}"


def _result_lines(res: WelchResult, unit: str) -> list[str]:
    return [
        f"A: n={res.n_a} mean={res.mean_a:.8f} std={res.std_a:.8f} {unit}",
        f"B: n={res.n_b} mean={res.mean_b:.8f} std={res.std_b:.8f} {unit}",
        f"H1: mean(B) - mean(A) > {res.margin:.8f} {unit} (one-sided Welch t-test)",
        f"difference of means: {res.mean_b - res.mean_a:.8f} {unit}",
        f"t = {res.t:.6f}, df = {res.df:.4f}, p = {res.p:.6g}",
    ]


def _unknown_ratio_lines(a: Entry, b: Entry) -> list[str]:
    lines = [
        f"tokens/byte unknown: the {MARGIN_NATS} nat margin is 0.005/ln2·(T/B) bpb, not computable "
        "without the ratio — no verdict on the README rule.",
    ]
    try:
        res = welch_improvement(seed_bpbs(a), seed_bpbs(b), 0.0)
    except SignificanceError as exc:
        return lines + [f"margin-0 test in bpb not computable either: {exc}"]
    lines.append("For information only, margin-0 test in bpb (A better than B at all):")
    return lines + _result_lines(res, "bpb")


def incomparable(a: Entry, b: Entry) -> str:
    """Why A's and B's scores cannot be compared ("" when they can, or when it is unknown)."""
    for what, x, y in (
        ("dataset", a.dataset_sha256, b.dataset_sha256),
        ("tokenizer", a.tokenizer_sha256, b.tokenizer_sha256),
    ):
        if x and y and x.lower() != y.lower():
            return f"different {what} fingerprints ({x[:12]} vs {y[:12]})"
    if bool(a.non_record) != bool(b.non_record):
        return f"only one is scored with the record protocol ({a.non_record or b.non_record})"
    return ""


def compare(a: Entry, b: Entry) -> str:
    """The printed report of `pgolf compare A B`: the per-seed numbers that went in, the
    conversion used, t, df, p and the verdict on the README rule."""
    ratio, ratio_note = conversion_ratio(a, b)
    lines = [f"Does A improve on B by at least {MARGIN_NATS} nats/token at p < {ALPHA}?"]
    lines += _seed_lines("A", a, ratio) + _seed_lines("B", b, ratio)
    reason = incomparable(a, b)
    if reason:
        lines += [f"not comparable: {reason}", "verdict: undetermined (not comparable)"]
        return "\n".join(lines) + "\n"
    if ratio is None:
        return (
            "\n".join(lines + _unknown_ratio_lines(a, b) + ["verdict: undetermined (tokens/byte unknown)"])
            + "\n"
        )
    lines.append(f"conversion: nats/token = bpb * ln2 / tokens_per_byte, with {ratio_note}")
    if (
        a.tokens_per_byte is not None
        and b.tokens_per_byte is not None
        and not math.isclose(a.tokens_per_byte, b.tokens_per_byte, rel_tol=1e-6)
    ):
        lines.append("note: A and B have different tokens/byte; A's bpb is expressed in B's nats/token")
    try:
        res = improvement(a, b)
    except SignificanceError as exc:
        return "\n".join(lines + [f"not computable: {exc}", "verdict: undetermined"]) + "\n"
    lines += _result_lines(res, "nats/token")
    verdict = "significant" if res.significant else "not significant"
    lines.append(f"verdict: {verdict} (p {'<' if res.significant else '>='} {ALPHA})")
    return "\n".join(lines) + "\n"
