"""Tests for harness.leaderboard.significance: the one-sided Welch test against scipy's own
``ttest_ind(equal_var=False, alternative="less")`` on margin-shifted data and against the
closed-form Student-t CDF for 4 degrees of freedom, the margin, the bpb <-> nats conversion
with the sp1024 numbers of docs/protocol.md §2.4, and the printed `compare` report."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from harness.api.errors import DataError
from harness.leaderboard.entry import Entry, SeedResult
from harness.leaderboard.significance import (
    SignificanceError,
    bpb_to_nats,
    compare,
    improvement,
    nats_to_bpb,
    welch_improvement,
)

SP1024_TPB = 0.41052  # docs/protocol.md §2.4, §2.6: 62,021,632 tokens / 151,080,363 bytes


def _entry(key: str, bpbs: list[float], tpb: float | None = SP1024_TPB) -> Entry:
    seeds = [SeedResult(seed=str(i), val_bpb=x) for i, x in enumerate(bpbs)]
    return Entry(key=key, name=key, score_bpb=sum(bpbs) / len(bpbs), seeds=seeds, tokens_per_byte=tpb)


def test_sp1024_margin_matches_protocol() -> None:
    # docs/protocol.md §2.4: 0.005 nats/token is about 0.00296 bpb for sp1024.
    assert nats_to_bpb(0.005, SP1024_TPB) == pytest.approx(0.00296, abs=5e-6)
    assert nats_to_bpb(0.005, 62_021_632 / 151_080_363) == pytest.approx(
        0.005 / math.log(2) * 0.41052, rel=1e-4
    )


def test_conversion_roundtrip_and_formula() -> None:
    # Naive baseline: val_loss 2.0727 nats at val_bpb 1.2244 (upstream log) -> tokens/byte 0.4105
    assert bpb_to_nats(1.2243657, SP1024_TPB) == pytest.approx(1.2243657 * 0.6931471805599453 / 0.41052)
    assert bpb_to_nats(1.2243657, SP1024_TPB) == pytest.approx(2.0673, abs=2e-3)
    for bpb in (0.5, 1.2243657, 3.0):
        assert nats_to_bpb(bpb_to_nats(bpb, 0.3), 0.3) == pytest.approx(bpb, rel=1e-15)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_conversion_rejects_bad_ratio(bad: float) -> None:
    with pytest.raises(DataError, match="tokens_per_byte"):
        bpb_to_nats(1.0, bad)


def test_p_matches_scipy_ttest_on_shifted_data() -> None:
    a = [2.05, 2.06, 2.052, 2.058]
    b = [2.07, 2.068, 2.075]
    margin = 0.005
    res = welch_improvement(a, b, margin)
    # H1: mean(b) - mean(a) > m  <=>  mean(a) < mean(b - m).
    ref = stats.ttest_ind(a, [x - margin for x in b], equal_var=False, alternative="less")
    assert res.p == pytest.approx(ref.pvalue, rel=1e-10)
    assert res.t == pytest.approx(-ref.statistic, rel=1e-10)
    assert res.n_a == 4 and res.n_b == 3
    assert res.std_a == pytest.approx(stats.tstd(a))
    assert res.significant == (ref.pvalue < 0.01)


def test_hand_computed_df_and_closed_form_t4() -> None:
    # Equal variances 1 and n=3 per side: df = (2/3)^2 / (2 * (1/3)^2 / 2) = 4 exactly,
    # t = (5 - 2) / sqrt(2/3); Student t with 4 df has a closed-form CDF.
    res = welch_improvement([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], margin_nats=0.0)
    t = 3.0 / math.sqrt(2.0 / 3.0)
    assert res.df == pytest.approx(4.0)
    assert res.t == pytest.approx(t)
    u = t / math.sqrt(4.0 + t * t)
    cdf = 0.5 + 0.75 * u * (1.0 - u * u / 3.0)
    assert res.p == pytest.approx(1.0 - cdf, rel=1e-9)
    # p is just above the README's 0.01 (about 0.0107): not significant.
    assert 0.01 < res.p < 0.011 and res.significant is False


def test_margin_is_subtracted() -> None:
    a, b = [1.0, 1.1, 0.9], [1.5, 1.45, 1.55]
    with_margin = welch_improvement(a, b, margin_nats=0.2)
    shifted = welch_improvement(a, [x - 0.2 for x in b], margin_nats=0.0)
    assert with_margin.p == pytest.approx(shifted.p, rel=1e-12)
    # Difference of means 0.5: a margin of 0.5 puts t at 0, p at one half.
    assert welch_improvement(a, b, margin_nats=0.5).p == pytest.approx(0.5, abs=1e-12)


def test_one_zero_variance_side_is_fine_both_is_not() -> None:
    res = welch_improvement([1.0, 1.0, 1.0], [1.2, 1.3, 1.25], 0.0)
    assert res.df == pytest.approx(2.0)  # only B's variance counts: df = n_b - 1
    with pytest.raises(SignificanceError, match="zero variance"):
        welch_improvement([1.0, 1.0], [2.0, 2.0], 0.0)


def test_too_few_seeds() -> None:
    with pytest.raises(SignificanceError, match="at least 2") as err:
        welch_improvement([1.0], [2.0, 2.1])
    assert err.value.reason == "A has 1 seed"


def test_compare_significant_report_lists_inputs() -> None:
    a = _entry("new", [1.1000, 1.1010, 1.0995])
    b = _entry("old", [1.1200, 1.1210, 1.1190])
    text = compare(a, b)
    for x in (1.1000, 1.1010, 1.0995, 1.1200, 1.1210, 1.1190):
        assert f"{x:.8f}" in text
        assert f"{x * math.log(2) / SP1024_TPB:.8f}" in text
    ref = stats.ttest_ind(
        [x * math.log(2) / SP1024_TPB for x in (1.1000, 1.1010, 1.0995)],
        [x * math.log(2) / SP1024_TPB - 0.005 for x in (1.1200, 1.1210, 1.1190)],
        equal_var=False,
        alternative="less",
    )
    assert f"p = {ref.pvalue:.6g}" in text
    assert "0.410520" in text and "df = " in text and "t = " in text
    assert ref.pvalue < 0.01 and text.rstrip().endswith("verdict: significant (p < 0.01)")


def test_compare_below_margin_is_not_significant() -> None:
    # 0.001 bpb better, far below the 0.00296 bpb margin, with tiny noise.
    a = _entry("new", [1.1000, 1.1001, 1.0999])
    b = _entry("old", [1.1010, 1.1011, 1.1009])
    assert improvement(a, b).p > 0.99
    assert "verdict: not significant" in compare(a, b)


def test_compare_unknown_ratio_gives_no_verdict() -> None:
    a = _entry("new", [1.10, 1.101, 1.099], tpb=None)
    b = _entry("old", [1.12, 1.121, 1.119], tpb=None)
    text = compare(a, b)
    assert "tokens/byte unknown" in text and "verdict: undetermined" in text
    assert "margin-0 test in bpb" in text
    with pytest.raises(SignificanceError) as err:
        improvement(a, b)
    assert err.value.reason == "tokens/byte unknown"


def test_compare_uses_b_ratio_then_a_ratio() -> None:
    a = _entry("new", [1.10, 1.101, 1.099], tpb=0.3)
    b = _entry("old", [1.12, 1.121, 1.119], tpb=None)
    text = compare(a, b)
    assert "tokens/byte 0.300000 of A (new)" in text
    assert f"{1.12 * math.log(2) / 0.3:.8f}" in text


@pytest.mark.parametrize(
    ("a_fields", "b_fields", "reason"),
    [
        (
            {"tokenizer_sha256": "ab" * 32},
            {"tokenizer_sha256": "cd" * 32},
            "different tokenizer fingerprints",
        ),
        ({"dataset_sha256": "ab" * 32}, {"dataset_sha256": "cd" * 32}, "different dataset fingerprints"),
        ({"non_record": "eval stride 32, records use 64"}, {}, "only one is scored with the record protocol"),
    ],
)
def test_compare_gives_no_verdict_on_incomparable_entries(
    a_fields: dict, b_fields: dict, reason: str
) -> None:
    """The same numbers as the significant report above: only the comparability differs."""
    a = _entry("new", [1.1000, 1.1010, 1.0995])
    b = _entry("old", [1.1200, 1.1210, 1.1190])
    assert compare(a, b).rstrip().endswith("verdict: significant (p < 0.01)")
    for entry, fields in ((a, a_fields), (b, b_fields)):
        for key, value in fields.items():
            setattr(entry, key, value)
    text = compare(a, b)
    assert f"not comparable: {reason}" in text and text.rstrip().endswith(
        "verdict: undetermined (not comparable)"
    )
