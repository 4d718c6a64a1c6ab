"""The ``pgolf`` command line: run, list, bundle, data, rescore, import, package.

``pgolf run`` is a convenience over the canonical entry point
``torchrun --standalone --nproc_per_node=N harness/run.py submissions/<name>``; every
subcommand prints one clear line and exits with status 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from harness.api.errors import PgolfError
from harness.pipeline.flags import add_run_flags, run_flags


def _cmd_run(args: argparse.Namespace) -> int:
    if args.seeds is not None:
        from harness.tools.seeds import run_seeds

        return run_seeds(args)
    argv = run_flags(args).argv()
    if args.nproc > 1:
        cmd = run_command(args.submission, argv, args.nproc)
        print("+ " + " ".join(cmd), flush=True)
        return subprocess.call(cmd)
    from harness.run import main as run_main

    return run_main([str(args.submission), *argv])


def run_command(submission: Path, argv: list[str], nproc: int) -> list[str]:
    """``harness/run.py SUBMISSION ARGV`` as a command, under torchrun when ``nproc`` > 1."""
    run_py = Path(__file__).resolve().parents[1] / "run.py"
    launcher = (
        ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
    )
    return [sys.executable, *launcher, str(run_py), str(submission), *argv]


def _cmd_list(args: argparse.Namespace) -> int:
    from harness.api.hooks import HOOK_NAMES
    from harness.pipeline.plugin_manager import full_manager

    manager = full_manager(entrypoints=not args.no_entrypoints)
    kinds: dict[str, list[str]] = {}
    for comp in manager.registry:
        kinds.setdefault(comp.kind, []).append(f"{comp.name} ({comp.module}.{comp.config_cls.__name__})")
    for kind in sorted(kinds):
        print(f"{kind}:")
        for line in kinds[kind]:
            print(f"  {line}")
    print("hooks: " + ", ".join(HOOK_NAMES))
    return 0


def _cmd_bundle(args: argparse.Namespace) -> int:
    from harness.tools.bundle import bundle_submission

    if args.report:  # prints the per-module costs of the shipped bundle; writes nothing
        from harness.tools.bundle_report import bundle_report, format_report

        print(format_report(bundle_report(Path(args.submission))), end="")  # default-data modules
        return 0
    out = args.output or (Path(args.submission) / "dist" / "train_gpt.py")
    out.parent.mkdir(parents=True, exist_ok=True)
    encoding = "base85" if args.ascii else "latin1"
    compress = args.compress or args.ascii
    info = bundle_submission(Path(args.submission), out, compress=compress, encoding=encoding)
    print(
        f"bundled {len(info.modules)} modules into {info.path}: {info.bytes} bytes, "
        f"{info.lines} lines, sha256 {info.sha256[:16]}"
    )
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    if args.data_cmd == "build-default":
        from harness.datasets.default import ensure_default_dataset

        ds = ensure_default_dataset(progress=True, variant=args.variant)
        print(f"default dataset: {ds.data_path}\ntokenizer: {ds.tokenizer_path}")
        return 0
    if args.data_cmd == "bytes":
        from harness.datasets.byte_level import convert_to_bytes

        dest = convert_to_bytes(Path(args.source), Path(args.tokenizer), Path(args.dest), progress=True)
        print(f"byte dataset: {dest}\ntokenizer: {dest / 'tokenizer.json'}")
        return 0
    from harness.datasets.download import download_challenge_data

    path = download_challenge_data(args.variant, args.train_shards, Path(args.dest))
    models = sorted((Path(args.dest) / "tokenizers").glob("*.model"))
    print(f"dataset: {path}")
    binding = path / "manifest.json"  # ours: names the tokenizer that made these shards
    if binding.is_file():
        models = [(path / json.loads(binding.read_text(encoding="utf-8"))["tokenizer_path"]).resolve()]
    for model in models:
        print(f"tokenizer: {model}")
    tok = models[0] if len(models) == 1 else "<one of the tokenizers above>"
    print(
        f"run with: DATA_PATH={path} TOKENIZER_PATH={tok} "
        "torchrun --standalone --nproc_per_node=8 harness/run.py submissions/<name>"
    )
    return 0


def _cmd_rescore(args: argparse.Namespace) -> int:
    from harness.tools.rescore import rescore

    target = Path(args.target)
    settings = {"seq_len": 1024, "stride": 64, "val_max_tokens": 0, "data_path": None, "tokenizer_path": None}
    variant = "sp1024"
    if target.is_dir():
        cfg = json.loads((target / "config.json").read_text(encoding="utf-8"))
        settings.update(
            seq_len=cfg["train"]["train_seq_len"],
            stride=cfg["eval"]["eval_stride"],
            val_max_tokens=cfg["eval"]["val_max_tokens"],
            data_path=cfg["data"]["data_path"],
            tokenizer_path=cfg["data"]["tokenizer_path"],
        )
        variant = cfg["data"].get("default_variant", variant)
        artifacts = sorted(target.glob("*.pgolf"))
        if len(artifacts) != 1:
            raise PgolfError(f"{target} holds {len(artifacts)} .pgolf artifacts; expected exactly one")
        target = artifacts[0]
    data_path = args.data_path or settings["data_path"]
    tok = args.tokenizer_path or settings["tokenizer_path"]
    if data_path is None:
        from harness.datasets.default import ensure_default_dataset

        ds = ensure_default_dataset(progress=True, variant=variant)
        data_path, tok = ds.data_path, tok or ds.tokenizer_path
    if tok is None:
        raise PgolfError("--tokenizer-path is required with --data-path")
    out = rescore(
        target,
        data_path=Path(data_path),
        tokenizer_path=Path(tok),
        seq_len=settings["seq_len"],
        stride=settings["stride"],
        val_max_tokens=settings["val_max_tokens"],
        device=args.device,
        check_binding=True,
    )
    print(json.dumps(out, indent=2))
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from harness.tools.upstream_import import import_upstream

    source, out = Path(args.source), Path(args.output)
    info = import_upstream(source, Path(args.submission), out, upstream_numerics=not args.harness_numerics)
    print(f"wrote {info.path}: {info.bytes_on_disk} bytes (raw {info.raw_bytes}, sha256 {info.sha256})")
    return 0


def _entries(records: str | None):
    """Entries of an upstream records folder, or our runs pooled with the runs left out."""
    from harness.leaderboard.ourruns import RunPool, pool_runs
    from harness.leaderboard.records import import_records

    return RunPool(import_records(Path(records))) if records else pool_runs(Path("submissions"))


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from harness.leaderboard.render import regenerate, render

    if args.records:
        out = Path(args.out or "leaderboard_records")
        paths = render(
            _entries(args.records).entries,
            out,
            title=f"Upstream records: {args.records}",
            root=Path(args.records),
        )
    else:
        paths = regenerate(Path("."), Path(args.out) if args.out else None)
    for path in paths:
        print(f"wrote {path}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from harness.leaderboard.significance import compare

    if Path(args.a).is_dir() and Path(args.b).is_dir():  # two record folders (e.g. ours vs upstream's)
        from harness.tools.record_readme import compare_folders

        print(compare_folders(Path(args.a), Path(args.b)), end="")
        return 0
    pooled = _entries(args.records)
    entries = {e.key: e for e in pooled.entries}
    missing = [k for k in (args.a, args.b) if k not in entries]
    if missing:
        raise PgolfError(f"no entry named {', '.join(missing)}; known: {', '.join(sorted(entries))}")
    print(compare(entries[args.a], entries[args.b]))
    names = {entries[args.a].name, entries[args.b].name}
    left_out = [x for x in pooled.excluded if x.name in names]
    if left_out:  # listed so nobody mistakes them for counted seeds; never part of the test
        print(f"runs left out of the statistics ({len(left_out)}):")
        for x in left_out:
            print(f"  {x.name}/runs/{x.run} seed {x.seed}: {x.reason}")
    return 0


def _cmd_package(args: argparse.Namespace) -> int:
    from harness.tools.package import package_main

    return package_main(args)


def _cmd_verify(args: argparse.Namespace) -> int:
    from harness.tools.verify import verify_main

    return verify_main(Path(args.run_dir))


def _cmd_bench(args: argparse.Namespace) -> int:
    from harness.tools.bench import bench_main

    return bench_main(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (its flag set is frozen by a test)."""
    p = argparse.ArgumentParser(prog="pgolf", description="Parameter Golf harness")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="run a submission (in-process, or torchrun with --nproc > 1)")
    r.add_argument("submission", type=Path)
    r.add_argument("--nproc", type=int, default=1, help="processes (torchrun --nproc_per_node)")
    r.add_argument(
        "--seeds",
        default=None,
        metavar="S1,S2,...",
        help="one run per seed (run id <run-id>_seed<S>), then runs/<run-id>_summary/submission.json",
    )
    add_run_flags(r)
    r.set_defaults(func=_cmd_run)

    ls = sub.add_parser("list", help="list registered components and hooks")
    ls.add_argument("--no-entrypoints", action="store_true", help="skip third-party plugins")
    ls.set_defaults(func=_cmd_list)

    b = sub.add_parser("bundle", help="write the self-contained train_gpt.py of a submission")
    b.add_argument("submission", type=Path)
    b.add_argument("-o", "--output", type=Path, default=None, help="default: <submission>/dist/train_gpt.py")
    b.add_argument(
        "--compress", action="store_true", help="minified, compressed, self-extracting (what a run ships)"
    )
    b.add_argument("--ascii", action="store_true", help="like --compress, written in base85 (pure ASCII)")
    b.add_argument(
        "--report", action="store_true", help="print each module's cost in shipped bytes (writes nothing)"
    )
    b.set_defaults(func=_cmd_bundle)

    d = sub.add_parser("data", help="build the default dataset or download the challenge data")
    dsub = d.add_subparsers(dest="data_cmd", required=True)
    bd = dsub.add_parser("build-default", help="build (or find) the built-in default dataset")
    bd.add_argument(
        "--variant",
        default="sp1024",
        choices=("sp1024", "sp8192", "bytes"),
        help="sp1024 or sp8192 tokens (tokenizer trained on the corpus) or raw UTF-8 bytes",
    )
    by = dsub.add_parser("bytes", help="write the byte variant (tokens 0-255) of a SentencePiece dataset")
    by.add_argument("source", help="folder holding fineweb_{train,val}_*.bin")
    by.add_argument("--tokenizer", required=True, help="the SentencePiece .model that made the source")
    by.add_argument("--dest", required=True, help="new or empty folder for the byte shards")
    dl = dsub.add_parser("download", help="download the challenge's cached FineWeb shards from the HF hub")
    dl.add_argument("--variant", default="sp1024", help="sp<VOCAB> or byte260, e.g. sp1024, sp8192")
    dl.add_argument("--train-shards", type=int, default=80)
    dl.add_argument("--dest", default="data")
    d.set_defaults(func=_cmd_data)

    rs = sub.add_parser("rescore", help="re-score an artifact (or a run folder) from its file alone")
    rs.add_argument("target", help="a .pgolf artifact or a run folder")
    rs.add_argument("--data-path", default=None)
    rs.add_argument("--tokenizer-path", default=None)
    rs.add_argument("--device", default="cpu", help="cpu or cuda")
    rs.set_defaults(func=_cmd_rescore)
    im = sub.add_parser(
        "import", help="convert an upstream final_model*.pt/.ptz to an artifact (no pickle code runs)"
    )
    im.add_argument("source", help="upstream final_model.pt or final_model.int8.ptz")
    im.add_argument("--submission", required=True, help="the submission whose model the weights fit")
    im.add_argument("-o", "--output", required=True, help="the .pgolf artifact to write (must not exist)")
    im.add_argument(
        "--harness-numerics",
        action="store_true",
        help="score with fp32 RoPE tables and embedding instead of upstream's bf16 (upstream_numerics off)",
    )
    im.set_defaults(func=_cmd_import)
    lb = sub.add_parser(
        "leaderboard", help="regenerate leaderboard/ from the runs (or render an upstream records folder)"
    )
    lb.add_argument(
        "--records", default=None, help="an upstream records/ folder to import instead of our runs"
    )
    lb.add_argument(
        "--out",
        default=None,
        help="output folder (default: leaderboard/, or leaderboard_records/ with --records)",
    )
    lb.set_defaults(func=_cmd_leaderboard)

    cp = sub.add_parser("compare", help="one-sided Welch test that A improves on B by 0.005 nats (p < 0.01)")
    cp.add_argument("a")
    cp.add_argument("b")
    cp.add_argument("--records", default=None, help="compare entries of an upstream records/ folder")
    cp.set_defaults(func=_cmd_compare)

    pk = sub.add_parser("package", help="write the record folder upstream expects from one run per seed")
    pk.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR", help="submissions/<name>/runs/<run_id>, one per seed"
    )
    pk.add_argument("--out", required=True, help="records folder to write <track>/<date>_<Name>/ into")
    pk.add_argument("--allow-smoke", action="store_true", help="also package smoke-protocol (CPU) runs")
    pk.set_defaults(func=_cmd_package)

    vf = sub.add_parser("verify", help="re-check a run from its files alone, in a fresh process")
    vf.add_argument("run_dir")
    vf.set_defaults(func=_cmd_verify)

    bn = sub.add_parser(
        "bench",
        help="run tests/benchmarks and compare with benchmarks/cpu/baseline.json (exit 1 on a regression)",
    )
    bn.add_argument(
        "--compare",
        type=Path,
        default=None,
        metavar="PATH",
        help="baseline pytest-benchmark JSON (default: benchmarks/cpu/baseline.json)",
    )
    bn.add_argument(
        "--save", action="store_true", help="store this run as the baseline (atomically) instead of comparing"
    )
    bn.add_argument(
        "--gpu",
        action="store_true",
        help="GPU ms/step of 12L_recycled and 10L_int5mlp; writes benchmarks/gpu/<device>.json",
    )
    bn.add_argument(
        "--threshold",
        type=float,
        default=None,
        metavar="PCT",
        help="median growth in percent that fails (default 50: shared CPUs are noisy)",
    )
    bn.set_defaults(func=_cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (PgolfError, OSError, KeyboardInterrupt) as exc:  # disk full, read-only --out, Ctrl-C
        from harness.pipeline.distributed import already_reported
        from harness.pipeline.failure import report_failure

        return report_failure(exc, already_reported(exc))


if __name__ == "__main__":
    sys.exit(main())
