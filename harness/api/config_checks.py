"""Checks on a resolved run configuration that no single field can make alone.

A Config checks its own fields in ``__post_init__``; the values here only make sense against
each other (the stride against the window) or are refused for the whole run (a training run
of no steps). They run once, in `harness.api.config.resolve`, after every override source has
been applied, so that nothing reaches training (and nothing is lost after it) on a setting the
run could never honour. The stride rule follows the upstream sliding-window evaluation
(docs/protocol.md §3.2): a window scores its last ``stride`` positions, so a stride of 0 or
above the window scores nothing or skips targets.
"""

from __future__ import annotations

from typing import Any

from harness.api.errors import ConfigError

RECORD_EVAL_STRIDE = 64
"""The sliding-window stride of the record protocol (every upstream record since PR #50); a
run scored at another stride is labelled non-record (`harness.pipeline.report`)."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_run_config(config: Any) -> None:
    """Refuse a resolved ``RunConfig`` whose settings contradict each other (ConfigError)."""
    train, ev = config.train, config.eval
    for key, value in (
        ("train.iterations", train.iterations),
        ("train.train_seq_len", train.train_seq_len),
        ("train.train_batch_tokens", train.train_batch_tokens),
    ):
        if not _is_int(value) or value < 1:
            raise ConfigError(f"{key}={value!r}: expected a positive integer")
    if not _is_int(ev.eval_seq_len) or ev.eval_seq_len < 0:
        raise ConfigError(
            f"eval.eval_seq_len={ev.eval_seq_len!r}: expected an integer >= 0 (0 = train_seq_len)"
        )
    window = ev.eval_seq_len or train.train_seq_len
    stride = ev.eval_stride
    if not _is_int(stride) or not 0 < stride <= window:
        raise ConfigError(
            f"eval.eval_stride={stride!r}: expected 0 < stride <= the sliding window ({window}, "
            f"eval.eval_seq_len or train.train_seq_len); the record protocol uses {RECORD_EVAL_STRIDE}"
        )
    chunk = ev.ttt_chunk_tokens
    if not _is_int(chunk) or chunk < 1:
        raise ConfigError(f"eval.ttt_chunk_tokens={chunk!r}: expected a positive integer (upstream: 32768)")


def nonrecord_reasons(config: Any) -> list[str]:
    """Why a run with this resolved config is not scored by the record protocol (empty when it is)."""
    stride = config.eval.eval_stride
    if stride != RECORD_EVAL_STRIDE:
        return [f"eval.eval_stride={stride}: the record protocol scores at stride {RECORD_EVAL_STRIDE}"]
    return []
