"""Checksums of the initial weights an upstream script draws at a seed (CPU, fp32).

Usage::

    python benchmarks/upstream_parity/init_checksums.py --upstream /path/to/train_gpt.py \
        [--seed 1337] > benchmarks/upstream_parity/init_<name>.json

The model is built exactly as upstream ``main()`` builds it: ``torch.manual_seed(seed)``, then
``GPT(...)`` with the keyword arguments of ``main()``'s own ``GPT(`` call, each evaluated
against the script's ``Hyperparameters()`` defaults (read from its source with ``ast``, so no
mapping is restated here). Nothing draws from the generator in between in upstream ``main()``
(tokenizer and validation loading use none). Parameter banks (PR #1573) are split into
per-layer matrices with the script's own ``_unbank_state_dict``. For every tensor, in fp32
before upstream's ``.bfloat16()`` cast: shape, sum and sum of squares in float64, and the
sha256 of its little-endian fp32 bytes. ``tests/unit/test_init_parity.py`` compares our
submissions' initial weights with these files.

The bits of an orthogonal init depend on torch's intra-op thread count (``orthogonal_`` runs a
QR decomposition in MKL/LAPACK, whose blocking follows the threads; measured with torch
2.13.0+cpu: 1, 2, 3 and 4 threads give four different matrices from the same seed), so the
count is recorded as ``num_threads`` and the test builds at that count. ``--threads`` sets it.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import inspect
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from upstream_module import load_upstream  # noqa: E402


def gpt_kwargs(up) -> dict:
    """The keyword arguments upstream ``main()`` passes to its first ``GPT(``, at the defaults."""
    tree = ast.parse(inspect.getsource(up.main))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "GPT"]
    if not calls:
        raise SystemExit("no GPT( call in main()")
    first = min(calls, key=lambda n: n.lineno)  # the training model (later ones rebuild it for eval)
    args = up.Hyperparameters()
    scope = {"args": args, "torch": torch}
    return {kw.arg: eval(compile(ast.Expression(kw.value), "<main>", "eval"), scope) for kw in first.keywords}


def checksums(state: dict[str, torch.Tensor]) -> dict[str, dict]:
    out = {}
    for name in sorted(state):
        t = state[name].detach().to(torch.float32).contiguous()
        d = t.double()
        out[name] = {
            "shape": list(t.shape),
            "sum": float(d.sum()),
            "sumsq": float((d * d).sum()),
            "sha256": hashlib.sha256(t.numpy().tobytes()).hexdigest(),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True, help="an upstream train_gpt.py (plain or lzma-wrapped)")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument(
        "--threads", type=int, default=2, help="torch intra-op threads (orthogonal_ depends on it)"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    up = load_upstream(args.upstream)
    kwargs = gpt_kwargs(up)
    torch.manual_seed(args.seed)
    model = up.GPT(**kwargs)
    state = model.state_dict()
    if hasattr(up, "_unbank_state_dict"):
        state = up._unbank_state_dict(state, kwargs["num_layers"])
    report = {
        "command": "python benchmarks/upstream_parity/init_checksums.py --upstream train_gpt.py "
        f"--seed {args.seed} --threads {args.threads}",
        "upstream_file_sha256": hashlib.sha256(Path(args.upstream).read_bytes()).hexdigest(),
        "torch": torch.__version__,
        "seed": args.seed,
        "num_threads": torch.get_num_threads(),
        "gpt_kwargs": {k: v for k, v in kwargs.items() if isinstance(v, (int, float, str, bool))},
        "tensors": checksums(state),
    }
    json.dump(report, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
