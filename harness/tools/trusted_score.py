"""The trusted scorer: score an artifact in a process that never runs submission code.

pgolf issue 11: `pgolf verify` used to re-run the shipped ``train_gpt.py``, so a submission that
patched the harness's byte count at import was re-run with the same patch and "verified". This
module is what `pgolf verify` trusts instead. Run as
``python -m harness.tools.trusted_score ARTIFACT --config config.json --data-path D --tokenizer T``
in a fresh interpreter, it:

1. installs a `FileAudit` hook (PEP 578) before anything but the standard library is imported;
2. imports the harness and the installed plugins (built-ins and the ``pgolf`` entry points),
   then checks that none of them changed the scoring code (`harness.pipeline.integrity`);
3. rebuilds the model from the artifact's manifest through the registry only
   (`harness.tools.rescore.model_from_artifact`): a component that is not an installed plugin
   makes the result "unverifiable", naming it;
4. scores it with the run's own `Scorer` settings read from ``config.json`` (standard, sliding
   window, and the score-first TTT pass when the run had an ``eval.adapter``); the loss and the
   byte count are the harness's (`harness.pipeline.eval`), from the model's logits only;
5. prints one JSON line: the scores, the files read that are not allowed, and any refusal.

On CUDA with ``train.compile`` the sliding pass is compiled as in the run, and the compile caches
(`compile_caches`) are allowed reads: a plugin could hide data there (README "Guarantees").

The submission's ``train_gpt.py`` is never opened: nothing in it can reach this process.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from harness.tools.file_audit import FileAudit

RESULT_PREFIX = "pgolf-trusted-score: "
"""Start of the one stdout line holding the JSON result (the rest of stdout is ignored)."""


def _sections(config_json: dict[str, Any]) -> SimpleNamespace:
    """The ``train``/``eval`` settings `Scorer` reads, as attributes (no submission class is built)."""
    return SimpleNamespace(
        train=SimpleNamespace(**config_json["train"]), eval=SimpleNamespace(**config_json["eval"])
    )


def _adapter(registry: Any, spec: dict[str, Any] | None, name: str | None) -> Any:
    """The run's TTT adapter rebuilt from its registry name and ``config.json`` fields, or None."""
    if spec is None:
        return None
    from harness.pipeline.artifact import config_from_json

    if not name:
        raise LookupError("config.json has an eval.adapter but submission.json names no ttt_adapter")
    comp = registry.get("adapter", name)
    fields = {k: v for k, v in spec.items() if k != "_class"}
    return config_from_json(comp.config_cls, fields, registry)


def score(args: argparse.Namespace) -> dict[str, Any]:
    """Steps 2-4 of the module docstring; the caller has installed the audit hook."""
    import torch

    from harness.api.context import DistInfo
    from harness.pipeline import integrity
    from harness.pipeline.bpb import build_byte_luts, tokenizer_sha256
    from harness.pipeline.data_binding import check_data_binding
    from harness.pipeline.plugin_manager import full_manager
    from harness.pipeline.scorer import Scorer
    from harness.pipeline.setup import autocast_dtype_for
    from harness.pipeline.shards import load_validation_tokens
    from harness.tools.rescore import model_from_artifact

    snapshot = integrity.ScoringSnapshot()  # before any plugin module runs
    manager = full_manager()
    changed = snapshot.changes()
    if changed:
        return {"unverifiable": "an installed plugin changed the scoring code: " + "; ".join(changed[:4])}
    config_json = json.loads(Path(args.config).read_text(encoding="utf-8"))
    settings = _sections(config_json)
    try:
        model, manifest = model_from_artifact(Path(args.artifact), manager)
        adapter = _adapter(manager.registry, config_json["eval"].get("adapter"), args.adapter)
    except Exception as exc:  # noqa: BLE001 - every reason is reported, none is fatal to verify
        return {"unverifiable": f"cannot rebuild from installed plugins only: {type(exc).__name__}: {exc}"}
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    vocab = int(manifest["extras"]["vocab_size"])
    luts = build_byte_luts(args.tokenizer, vocab)
    check_data_binding(args.data_path, args.tokenizer, tokenizer_sha256(args.tokenizer), luts.vocab_size)
    val = load_validation_tokens(
        args.data_path, settings.train.train_seq_len, vocab, max_targets=settings.eval.val_max_tokens
    )
    dist = DistInfo(0, 1, 0, device, None)
    accum = settings.train.grad_accum_steps if settings.train.grad_accum_steps > 0 else 8
    scorer = Scorer(settings, dist, luts, val, autocast_dtype_for(device), accum)  # type: ignore[arg-type]
    model = model.to(device)
    std = scorer.standard(model)
    out: dict[str, Any] = {
        "roundtrip_val_bpb": std.val_bpb,
        "val_tokens": std.tokens,
        "val_bytes": std.bytes,
        "sliding_val_bpb": None,
        "ttt_val_bpb": None,
    }
    if scorer.sliding_enabled():
        out["sliding_val_bpb"] = scorer.sliding(model).val_bpb
    if adapter is not None:
        from harness.pipeline.adaptation import evaluate_adaptive

        ttt = evaluate_adaptive(
            model,
            adapter.build(),
            val,
            luts,
            window=scorer.window(),
            stride=settings.eval.eval_stride,
            chunk_tokens=settings.eval.ttt_chunk_tokens,
            batch_seqs=scorer.sliding_batch_seqs(),
            device=device,
            autocast_dtype=autocast_dtype_for(device),
            compile_model=settings.train.compile,
        )
        out["ttt_val_bpb"] = ttt.result.val_bpb
    return out


def compile_caches() -> list[Path]:
    """The folders where ``torch.compile`` (inductor, triton) keeps generated kernels; the sliding pass
    compiles on CUDA when the run did, and reads them back. Their defaults, or the variables that move
    them. Not exercised on CPU (nothing compiles there)."""
    user = getpass.getuser()
    inductor = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or str(
        Path(tempfile.gettempdir()) / f"torchinductor_{user}"
    )
    triton = os.environ.get("TRITON_CACHE_DIR") or str(Path.home() / ".triton")
    return [Path(inductor), Path(triton)]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness.tools.trusted_score", description=__doc__)
    parser.add_argument("artifact")
    parser.add_argument("--config", required=True, help="the run's config.json")
    parser.add_argument("--data-path", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--adapter", default=None, help="the registry name of the run's TTT adapter")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Score under the audit hook and print the `RESULT_PREFIX` line; 0 when it printed one."""
    args = _parser().parse_args(argv)
    # Before the hook: the first tempfile.gettempdir() writes and opens a probe file of its own.
    caches = compile_caches()
    audit = FileAudit()
    audit.install()
    try:
        result = score(args)
    except Exception as exc:  # noqa: BLE001 - reported in the result line, named
        result = {"error": f"{type(exc).__name__}: {exc}"}
    from harness.pipeline.data_binding import MANIFEST_NAME
    from harness.pipeline.shards import list_shards

    data = Path(args.data_path)
    allowed = [Path(args.artifact), Path(args.config), Path(args.tokenizer), data / MANIFEST_NAME]
    allowed += list_shards(data, "val") if data.is_dir() else []
    result["file_access"] = audit.violations(allowed, caches)
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
