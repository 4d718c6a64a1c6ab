"""The built-in default dataset: CPython's own documentation, tokenized like FineWeb sp1024.

So that a run works offline with no download, this module builds a small corpus from text
that ships with every CPython install -- the `pydoc_data.topics` help pages and the
docstrings of the standard library's source files (read with `ast`, never imported) --
and exports it the way upstream `openai/parameter-golf`
`data/download_hf_docs_and_tokenize.py` exports FineWeb (docs/protocol.md §1.2, §1.5-1.6):
validation = the first documents of a frozen seeded shuffle, a SentencePiece BPE
tokenizer trained with the official settings on all documents, every document prefixed
with BOS (id 1) and no EOS, `fineweb_{train,val}_NNNNNN.bin` shards of at most 1e8 tokens.
The result is cached under ``$PGOLF_CACHE_DIR`` (default ``~/.cache/pgolf``) with a
`manifest.json` recording doc ids, token counts and the sha256 of every file.

The "sp8192" variant is the same documents and split tokenized by a vocabulary-8192 tokenizer
trained the same way (the published fineweb_8192_bpe.model's trainer settings, byte fallback
included), for vocab-8192 submissions offline. It is trained at build time, not shipped: with one
thread SentencePiece's BPE trainer is deterministic (same sha256 on every build, checked by the
tests) and takes 0.2 s on this corpus on an idle core (its model file is 370 KB).

The "bytes" variant is the same documents as UTF-8 bytes (tokens 0-255), made from the sp1024
shards by `harness.datasets.byte_level.convert_to_bytes` into a sibling folder; the tokenizer has
byte fallback on, so the conversion is lossless.

Every manifest records ``tokenizer_sha256`` and ``vocab_size``, which bind the shards to their
tokenizer: a run scoring them with another tokenizer is refused (`harness.pipeline.data_binding`).

This module prepares the data and is never shipped in a bundle (data preparation is not counted
code, as upstream's data scripts are not); where a prepared copy lives and whether it is whole is
`harness.pipeline.prepared_data`, which a shipped run uses to find it.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import random
import shutil
import sys
import sysconfig
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm
from tqdm import tqdm

from harness.api.errors import DataError
from harness.datasets.byte_level import convert_to_bytes
from harness.pipeline.byte_data import (
    BYTES_BUILD_VERSION,
    default_bytes_dataset_dir,
    is_bytes_complete,
    load_prepared_bytes,
)
from harness.pipeline.prepared_data import (
    BUILD_VERSION,
    SP_VOCABS,
    DefaultDataset,
    default_dataset_dir,
    find_prepared,
    is_complete,
    load_prepared,
)
from harness.pipeline.shards import file_sha256, write_shard

SEED = 1337
VAL_FRACTION = 0.05
MAX_TEXT_BYTES = 12_000_000
SHARD_TOKENS = 100_000_000
BOS_ID = 1
SKIP_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})
TOKENIZER_SETTINGS: dict[str, Any] = {
    # docs/protocol.md §1.6, upstream `build_sentencepiece_tokenizer`.
    "model_type": "bpe",
    "vocab_size": 1024,
    "character_coverage": 0.999,
    "byte_fallback": True,
    "split_digits": True,
    "normalization_rule_name": "nmt_nfkc",
    "add_dummy_prefix": False,
    "pad_id": 0,
    "bos_id": 1,
    "eos_id": 2,
    "unk_id": 3,
    "hard_vocab_limit": False,
    # Ours: the trainer silently skips sentences over 4192 bytes and our documents (whole
    # modules' docstrings) reach ~70 KB; one thread because the learned merges depend on
    # the thread count, and the build must be byte-identical everywhere.
    "max_sentence_length": 1 << 20,
    "num_threads": 1,
    "minloglevel": 2,
}
SOURCE = (
    "CPython documentation shipped with the interpreter: every pydoc_data.topics entry, "
    "and per standard-library .py file its module/class/function docstrings (parsed with ast)"
)


def _clean(text: str) -> str:
    """Upstream's document hygiene: NULs become spaces, surrounding whitespace goes."""
    return text.replace("\0", " ").strip()


def _topic_docs() -> list[tuple[str, str]]:
    """(doc id, text) for every pydoc help topic, sorted by key."""
    from pydoc_data.topics import topics  # data-only module: safe to import

    return [(f"pydoc_topics/{key}", topics[key]) for key in sorted(topics)]


def _stdlib_files(stdlib: Path) -> list[Path]:
    """The stdlib's .py files outside tests and site-packages, sorted by relative path."""
    found = []
    for folder, dirs, files in os.walk(stdlib):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        found += [Path(folder) / f for f in files if f.endswith(".py")]
    return sorted(found, key=lambda p: p.relative_to(stdlib).as_posix())


def _docstrings(path: Path) -> str:
    """Module docstring then class/function docstrings in source order; '' if unparsable."""
    try:
        with warnings.catch_warnings():
            # Old stdlib files raise SyntaxWarnings (invalid escapes) that mean nothing here.
            warnings.simplefilter("ignore")
            tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, UnicodeDecodeError, RecursionError, OSError):
        return ""
    defs = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    nodes = sorted((n for n in ast.walk(tree) if isinstance(n, defs)), key=lambda n: (n.lineno, n.col_offset))
    parts = [ast.get_docstring(node, clean=True) for node in [tree, *nodes]]
    return "\n\n".join(p for p in parts if p)


def document_text(doc_id: str) -> str:
    """The cleaned text of one document, by its manifest id (for audits and tests)."""
    kind, _, key = doc_id.partition("/")
    if kind == "pydoc_topics":
        from pydoc_data.topics import topics

        if key not in topics:
            raise DataError(f"unknown document id {doc_id!r}: no pydoc topic {key!r}")
        return _clean(topics[key])
    path = Path(sysconfig.get_paths()["stdlib"]) / key
    if kind != "stdlib" or not path.is_file():
        raise DataError(f"unknown document id {doc_id!r}: expected pydoc_topics/<key> or stdlib/<file>")
    return _clean(_docstrings(path))


def collect_documents(bar: tqdm | None = None) -> list[tuple[str, str]]:
    """All (doc id, text) pairs in a fixed order, capped at MAX_TEXT_BYTES of UTF-8."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = _stdlib_files(stdlib)
    topics = _topic_docs()
    if bar is not None:
        bar.total = len(topics) + len(files)
        bar.refresh()
    raw = iter(topics + [(f"stdlib/{p.relative_to(stdlib).as_posix()}", p) for p in files])
    docs, total = [], 0
    for doc_id, source in raw:
        text = _clean(source if isinstance(source, str) else _docstrings(source))
        if bar is not None:
            bar.update(1)
        if not text:
            continue
        size = len(text.encode("utf-8"))
        if total + size > MAX_TEXT_BYTES:
            break  # a stable prefix of a stable order keeps the cap deterministic
        docs.append((doc_id, text))
        total += size
    return docs


def split_documents(num_docs: int) -> tuple[list[int], list[int]]:
    """(val, train) document indices: the first 5% (>= 1) of a Random(1337) shuffle are val."""
    if num_docs < 2:
        raise DataError(f"the default dataset needs at least 2 documents, found {num_docs}")
    order = list(range(num_docs))
    random.Random(SEED).shuffle(order)
    num_val = max(1, int(num_docs * VAL_FRACTION))
    return order[:num_val], order[num_val:]


def tokenizer_settings(vocab_size: int = 1024) -> dict[str, Any]:
    """TOKENIZER_SETTINGS with ``vocab_size`` (the sp8192 variant differs in nothing else)."""
    return {**TOKENIZER_SETTINGS, "vocab_size": vocab_size}


def train_tokenizer(texts: list[str], vocab_size: int = 1024) -> bytes:
    """Serialized SentencePiece model trained on all documents with `tokenizer_settings`."""
    model = io.BytesIO()
    settings = tokenizer_settings(vocab_size)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=model, **settings)
    return model.getvalue()


def _vocab_text(sp: spm.SentencePieceProcessor) -> str:
    """Upstream's `.vocab` format: one ``piece<TAB>score`` line per id."""
    return "".join(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(sp.vocab_size()))


def _encode_split(sp: spm.SentencePieceProcessor, texts: list[str]) -> np.ndarray:
    """BOS + ids of each document, concatenated (uint16)."""
    pieces: list[list[int]] = sp.encode(texts, out_type=int)
    flat = [tok for ids in pieces for tok in (BOS_ID, *ids)]
    return np.asarray(flat, dtype=np.uint16)


def _write_split(folder: Path, split: str, tokens: np.ndarray, vocab_size: int) -> list[str]:
    """Shards of at most SHARD_TOKENS tokens; returns their file names."""
    names = []
    for index, start in enumerate(range(0, max(len(tokens), 1), SHARD_TOKENS)):
        name = f"fineweb_{split}_{index:06d}.bin"
        write_shard(folder / name, tokens[start : start + SHARD_TOKENS], vocab_size=vocab_size)
        names.append(name)
    return names


def _manifest(
    docs: list[tuple[str, str]], splits: dict[str, list[int]], tokens: dict, files: dict, vocab: int
) -> dict:
    """Everything needed to audit the build; every shard is hashed (docs/pitfalls.md §1)."""
    ids = {split: [docs[i][0] for i in idx] for split, idx in splits.items()}
    settings = {k: v for k, v in tokenizer_settings(vocab).items() if k != "minloglevel"}
    return {
        "name": default_dataset_dir(f"sp{vocab}").name,
        "source": SOURCE,
        "python_version": sys.version.split()[0],
        "build_version": BUILD_VERSION,
        "seed": SEED,
        "bos_id": BOS_ID,
        "append_eos": False,
        "shard_size": SHARD_TOKENS,
        "num_docs": {split: len(v) for split, v in ids.items()},
        "tokens": {split: int(t.size) for split, t in tokens.items()},
        "files": files,
        "doc_ids": ids,
        "tokenizer": {"path": "tokenizer.model", "vocab_path": "tokenizer.vocab", "settings": settings},
    }


def _hash_files(folder: Path, manifest: dict) -> None:
    """Record sha256 and size of every file in the folder (manifest.json excluded), and bind the
    shards to their tokenizer (``tokenizer_sha256``, ``vocab_size``: docs/formats.md)."""
    names = sorted(p.name for p in folder.iterdir() if p.name != "manifest.json")
    manifest["sha256"] = {name: file_sha256(folder / name) for name in names}
    manifest["bytes"] = {name: (folder / name).stat().st_size for name in names}
    manifest["tokenizer_sha256"] = manifest["sha256"]["tokenizer.model"]
    manifest["vocab_size"] = manifest["tokenizer"]["settings"]["vocab_size"]


def _build_into(folder: Path, bar: tqdm, vocab_size: int) -> dict:
    """Collect, split, train the tokenizer, encode and write into ``folder``; return the manifest."""
    docs = collect_documents(bar)
    val_idx, train_idx = split_documents(len(docs))
    if set(val_idx) & set(train_idx):
        raise DataError("default dataset: train and val document sets overlap")  # invariant guard
    bar.set_description("building default dataset (first use): training tokenizer")
    model = train_tokenizer([text for _, text in docs], vocab_size)
    (folder / "tokenizer.model").write_bytes(model)
    sp = spm.SentencePieceProcessor(model_proto=model)
    if sp.vocab_size() != vocab_size:  # hard_vocab_limit=False lets a small corpus fall short
        raise DataError(f"default dataset: the tokenizer reached {sp.vocab_size()} pieces, not {vocab_size}")
    (folder / "tokenizer.vocab").write_text(_vocab_text(sp), encoding="utf-8")
    bar.set_description("building default dataset (first use): encoding")
    splits = {"val": val_idx, "train": train_idx}
    tokens, files = {}, {}
    for split, idx in splits.items():
        tokens[split] = _encode_split(sp, [docs[i][1] for i in idx])
        files[split] = _write_split(folder, split, tokens[split], sp.vocab_size())
    manifest = _manifest(docs, splits, tokens, files, vocab_size)
    _hash_files(folder, manifest)
    return manifest


def build_default_dataset(dest: Path, progress: bool = True, vocab_size: int = 1024) -> DefaultDataset:
    """Build the dataset with a ``vocab_size`` tokenizer into ``dest`` (replacing an incomplete one).

    Work happens in a temporary sibling folder that is renamed into place at the end, so
    an interrupted build never leaves a half dataset at ``dest``.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    desc = "building default dataset (first use)"
    try:
        with tqdm(desc=desc, unit="doc", file=sys.stderr, disable=not progress) as bar:
            manifest = _build_into(tmp, bar, vocab_size)
            text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
            (tmp / "manifest.json").write_text(text, encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_prepared(dest)


@contextlib.contextmanager
def _build_lock(root: Path) -> Iterator[None]:
    """Exclusive lock so several ranks on one machine build the dataset only once."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".build.lock", "a+b") as fh:
        try:
            import fcntl
        except ImportError:  # Windows: no flock; concurrent builders are then not guarded
            yield
            return
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def build_default_bytes_dataset(dest: Path, source: DefaultDataset, progress: bool = True) -> DefaultDataset:
    """Convert the sp1024 dataset ``source`` into ``dest`` (replacing an incomplete one); return it.

    Like `build_default_dataset`, the work happens in a temporary sibling renamed into place.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        convert_to_bytes(source.data_path, source.tokenizer_path, tmp, progress=progress)
        manifest = json.loads((tmp / "manifest.json").read_text(encoding="utf-8"))
        manifest.update(
            name=dest.name,
            variant="bytes",
            build_version=BUILD_VERSION,
            bytes_build_version=BYTES_BUILD_VERSION,
            source_dataset=source.data_path.name,
        )
        (tmp / "manifest.json").write_text(
            json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_prepared_bytes(dest)


def ensure_default_dataset(progress: bool = True, variant: str = "sp1024") -> DefaultDataset:
    """The prepared default dataset, built on first use (about 5 s on 2 CPU cores).

    ``variant`` is "sp1024" or "sp8192" (SentencePiece datasets of those vocabularies) or
    "bytes" (the byte variant, built from the sp1024 one, which is built first if needed).
    Builds run under one lock.
    """
    found = find_prepared(variant)  # refuses an unknown variant
    if found is not None:
        return found
    dest = default_dataset_dir(variant if variant in SP_VOCABS else "sp1024")
    with _build_lock(dest.parent):
        # Another process may have finished a build while we waited for the lock.
        vocab = SP_VOCABS.get(variant, 1024)
        source = load_prepared(dest) if is_complete(dest) else build_default_dataset(dest, progress, vocab)
        if variant in SP_VOCABS:
            return source
        bytes_dest = default_bytes_dataset_dir()
        if is_bytes_complete(bytes_dest, source):
            return load_prepared_bytes(bytes_dest)
        return build_default_bytes_dataset(bytes_dest, source, progress=progress)
