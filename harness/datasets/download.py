"""Download the challenge's pre-tokenized FineWeb shards from the Hugging Face Hub.

Re-implements the behaviour of upstream `openai/parameter-golf`
`data/cached_challenge_fineweb.py` (docs/protocol.md §1.5): the dataset repo
`willdepueoai/parameter-golf` (env `MATCHED_FINEWEB_REPO_ID`) holds, under the remote root
`datasets/` (env `MATCHED_FINEWEB_REMOTE_ROOT_PREFIX`), a `manifest.json` whose entry
`fineweb10B_<variant>` gives the shard counts; all val shards, the first N train shards and
the tokenizer files named by the manifest are fetched with `huggingface_hub.hf_hub_download`
and hard-linked (or copied) into ``<dest>/datasets/fineweb10B_<variant>/``,
``<dest>/tokenizers/`` and ``<dest>/manifest.json``.

Variants are named as upstream names them (``sp<VOCAB>`` or ``byte260``). The SP4096 and
SP8192 exports are published in another dataset repo, ``kevclark/parameter-golf``, which the
records built on them (PR #1218, PR #1394 and later) name with ``MATCHED_FINEWEB_REPO_ID``;
here that repo is the default for those two variants, so ``--variant sp8192`` works alone.

After the download, ``<dataset>/manifest.json`` (our file, not upstream's) records the sha256
and vocabulary of the tokenizer the hub manifest names for the dataset, binding the shards to it
(`harness.pipeline.data_binding` refuses a run that scores them with another tokenizer).

Differences from upstream, all for robustness (verified, cached shards; docs/pitfalls.md §10):
every shard is verified (magic, version, size) before it is put in place and a corrupt
download raises `DataError` and is evicted from the HF cache; files are placed atomically; a
local file is skipped only when it is valid; the local manifest is reused only when it came
from the same repo and root (upstream silently reused a stale one); ``HF_ENDPOINT`` and the
HF cache location are read when called, not when `huggingface_hub` is imported.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import sentencepiece as spm
from tqdm import tqdm

from harness.api.errors import ConfigError, DataError
from harness.api.fileio import write_atomic
from harness.pipeline.shards import file_sha256, read_shard_header

DEFAULT_REPO_ID = "willdepueoai/parameter-golf"
VARIANT_REPO_IDS = {"sp4096": "kevclark/parameter-golf", "sp8192": "kevclark/parameter-golf"}
"""Variants published outside the default repo, and where (the records' READMEs)."""
VARIANT_PATTERN = re.compile(r"sp[0-9]+|byte260")
BINDING_NAME = "manifest.json"
"""Our manifest in the dataset folder: which tokenizer made the shards."""
DEFAULT_REMOTE_ROOT = "datasets"
DEFAULT_ENDPOINT = "https://huggingface.co"
SOURCE_FILE = ".manifest_source.json"
"""Beside the local manifest: which repo and remote root it was downloaded from."""


@dataclass(frozen=True)
class _Remote:
    """Where files come from and where they go."""

    repo_id: str
    remote_root: str
    endpoint: str
    cache_dir: str | None
    dest: Path
    progress: bool

    def remote_path(self, relative: str) -> str:
        """Path inside the HF repo of a file relative to the remote root."""
        return f"{self.remote_root.strip('/')}/{relative}" if self.remote_root.strip("/") else relative

    def local_path(self, relative: str) -> Path:
        """Local path of a file relative to the remote root (upstream's layout)."""
        parts = PurePosixPath(relative).parts
        if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
            raise DataError(f"manifest path {relative!r} must be relative and stay inside {self.dest}")
        return self.dest.joinpath(*parts)


def _hf_cache_dir() -> str | None:
    """The HF hub cache from the environment now (huggingface_hub reads it only at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def _check_shard(path: Path) -> None:
    read_shard_header(path)


def _check_nonempty(path: Path) -> None:
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty")


def _check_json(path: Path) -> None:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None


def _check_tokenizer(path: Path) -> None:
    """A `.model` file must load in SentencePiece; other tokenizer files must be non-empty."""
    _check_nonempty(path)
    if path.suffix == ".model":
        try:
            spm.SentencePieceProcessor(model_file=str(path))
        except (RuntimeError, OSError) as exc:
            raise DataError(f"{path} is not a SentencePiece model: {exc}") from None


def _is_valid(path: Path, check: Callable[[Path], None]) -> bool:
    if not path.is_file():
        return False
    try:
        check(path)
    except (DataError, OSError):
        return False
    return True


def _evict(cached: Path, blob: Path) -> None:
    """Drop a bad file from the HF cache so the next attempt downloads it again."""
    for path in (cached, blob):
        try:
            path.unlink()
        except OSError:
            pass


def _place(source: Path, target: Path) -> None:
    """Hard-link (else copy) ``source`` to ``target`` through a temp name and an atomic rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(source, tmp)
        except OSError:  # other filesystem, or links not allowed
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _download(remote: _Remote, repo_path: PurePosixPath, force: bool) -> Path:
    """``hf_hub_download`` one repo file into the HF cache; hub errors become DataError."""
    # Imported here: huggingface_hub is slow to import and only this path needs it.
    from huggingface_hub import hf_hub_download

    subfolder = None if str(repo_path.parent) == "." else str(repo_path.parent)
    quiet = {} if remote.progress else {"tqdm_class": functools.partial(tqdm, disable=True)}
    try:
        return Path(
            hf_hub_download(
                repo_id=remote.repo_id,
                filename=repo_path.name,
                subfolder=subfolder,
                repo_type="dataset",
                endpoint=remote.endpoint,
                cache_dir=remote.cache_dir,
                force_download=force,
                **quiet,
            )
        )
    except Exception as exc:  # network and hub errors of every kind end up the same way
        raise DataError(
            f"cannot download {repo_path} from dataset {remote.repo_id} at {remote.endpoint}: {exc}"
        ) from exc


def _fetch(remote: _Remote, relative: str, check: Callable[[Path], None]) -> Path:
    """Download one file (relative to the remote root), verify it, put it in place.

    A cached copy that fails the check is evicted and downloaded once more: local files
    are hard links to the cache blobs, so a file damaged in ``dest`` damages the blob too.
    """
    target = remote.local_path(relative)
    repo_path = PurePosixPath(remote.remote_path(relative))
    for attempt in range(2):
        cached = _download(remote, repo_path, force=attempt > 0)
        blob = cached.resolve(strict=True)  # snapshot entries are symlinks into blobs/
        try:
            check(blob)
        except DataError as exc:
            _evict(cached, blob)
            if attempt == 0:
                continue
            raise DataError(f"downloaded {repo_path} (for {target}) is corrupt: {exc}") from None
        _place(blob, target)
        return target
    raise AssertionError("unreachable")


def _get(remote: _Remote, relative: str, check: Callable[[Path], None]) -> bool:
    """Make sure one file is present and valid locally; True if it was downloaded."""
    if _is_valid(remote.local_path(relative), check):
        return False
    _fetch(remote, relative, check)
    return True


def _source(remote: _Remote) -> dict[str, str]:
    return {"repo_id": remote.repo_id, "remote_root": remote.remote_root}


def _dataset_entry(manifest: dict, name: str) -> dict | None:
    return next((d for d in manifest.get("datasets", []) if d.get("name") == name), None)


def _reusable_manifest(remote: _Remote, name: str, train_shards: int) -> dict | None:
    """The local manifest, if it came from this repo and covers the request."""
    try:
        source = json.loads((remote.dest / SOURCE_FILE).read_text(encoding="utf-8"))
        manifest = json.loads((remote.dest / "manifest.json").read_text(encoding="utf-8"))
        entry = _dataset_entry(manifest, name)
        enough = entry is not None and int(entry["stats"]["files_train"]) >= train_shards
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return manifest if source == _source(remote) and enough else None


def _load_manifest(remote: _Remote, name: str, train_shards: int) -> dict:
    """Reuse the local manifest when it fits, else download it (docs/protocol.md §1.5)."""
    manifest = _reusable_manifest(remote, name, train_shards)
    if manifest is not None:
        return manifest
    path = _fetch(remote, "manifest.json", _check_json)
    write_atomic(remote.dest / SOURCE_FILE, (json.dumps(_source(remote)) + "\n").encode("utf-8"))
    return json.loads(path.read_text(encoding="utf-8"))


def _shard_counts(entry: dict, where: str) -> tuple[int, int]:
    """(files_train, files_val) of a dataset entry."""
    try:
        stats = entry["stats"]
        return int(stats["files_train"]), int(stats["files_val"])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{where}: dataset {entry.get('name')!r} lacks stats.files_train/files_val") from None


def _tokenizer_files(manifest: dict, entry: dict, where: str) -> list[str]:
    """Tokenizer artifacts named by the dataset's tokenizer entry (model_path, vocab_path, path)."""
    name = entry.get("tokenizer_name")
    tok = next((t for t in manifest.get("tokenizers", []) if t.get("name") == name), None)
    if tok is None:
        raise DataError(f"{where}: tokenizer {name!r} of dataset {entry.get('name')!r} is not listed")
    files = [str(tok[key]) for key in ("model_path", "vocab_path", "path") if tok.get(key)]
    if not files:
        raise DataError(f"{where}: tokenizer {name!r} names no model_path, vocab_path or path")
    return files


def _bind_tokenizer(remote: _Remote, name: str, manifest: dict, entry: dict, files: list[str]) -> None:
    """Write ``<dataset>/manifest.json``: the sha256 and vocabulary of the dataset's tokenizer."""
    models = [f for f in files if f.endswith(".model")]
    if not models:
        return  # byte260's tokenizer is a JSON spec upstream; nothing SentencePiece to bind
    path = remote.local_path(models[0])
    vocab = int(spm.SentencePieceProcessor(model_file=str(path)).vocab_size())
    tok = next(t for t in manifest.get("tokenizers", []) if t.get("name") == entry.get("tokenizer_name"))
    listed = tok.get("vocab_size")
    if listed is not None and int(listed) != vocab:
        raise DataError(
            f"{path}: vocab size {vocab}, but the hub manifest lists {listed} for {tok['name']!r}"
        )
    binding = {
        "name": name,
        "source": {**_source(remote), "tokenizer": models[0]},
        "tokenizer_path": str(Path("..", "..", *PurePosixPath(models[0]).parts)),
        "tokenizer_sha256": file_sha256(path),
        "vocab_size": vocab,
    }
    text = json.dumps(binding, indent=2, sort_keys=True) + "\n"
    write_atomic(remote.dest / "datasets" / name / BINDING_NAME, text.encode("utf-8"))


def download_challenge_data(
    variant: str = "sp1024",
    train_shards: int = 80,
    dest: Path = Path("data"),
    *,
    repo_id: str | None = None,
    remote_root: str | None = None,
    endpoint: str | None = None,
    progress: bool = True,
) -> Path:
    """Fetch all val shards, the first ``train_shards`` train shards and the tokenizer, and bind
    them (``<dataset>/manifest.json``).

    Returns the local dataset folder ``<dest>/datasets/fineweb10B_<variant>``. Files already
    present and valid are not downloaded again.
    """
    if train_shards < 0:
        raise ConfigError(f"train_shards must be >= 0, got {train_shards}")
    if not VARIANT_PATTERN.fullmatch(variant):
        raise ConfigError(f"variant {variant!r}: expected sp<VOCAB_SIZE> (e.g. sp1024, sp8192) or byte260")
    default_repo = VARIANT_REPO_IDS.get(variant, DEFAULT_REPO_ID)
    remote = _Remote(
        repo_id=repo_id or os.environ.get("MATCHED_FINEWEB_REPO_ID") or default_repo,
        remote_root=remote_root
        if remote_root is not None
        else os.environ.get("MATCHED_FINEWEB_REMOTE_ROOT_PREFIX", DEFAULT_REMOTE_ROOT),
        endpoint=(endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/"),
        cache_dir=_hf_cache_dir(),
        dest=Path(dest),
        progress=progress,
    )
    name = f"fineweb10B_{variant}"
    manifest = _load_manifest(remote, name, train_shards)
    where = f"manifest {remote.remote_path('manifest.json')} of {remote.repo_id}"
    entry = _dataset_entry(manifest, name)
    if entry is None:
        known = sorted(
            str(d.get("name", "")).removeprefix("fineweb10B_") for d in manifest.get("datasets", [])
        )
        raise DataError(
            f"{where}: unknown variant {variant!r}; available variants: {', '.join(known) or 'none'}"
        )
    files_train, files_val = _shard_counts(entry, where)
    if train_shards > files_train:
        raise DataError(f"{where}: {train_shards} train shards requested but {name} has only {files_train}")
    todo = [(f"datasets/{name}/fineweb_val_{i:06d}.bin", _check_shard) for i in range(files_val)]
    todo += [(f"datasets/{name}/fineweb_train_{i:06d}.bin", _check_shard) for i in range(train_shards)]
    tokenizer_files = _tokenizer_files(manifest, entry, where)
    todo += [(path, _check_tokenizer) for path in tokenizer_files]
    with tqdm(todo, desc=f"downloading {name}", unit="file", disable=not progress) as bar:
        for relative, check in bar:
            _get(remote, relative, check)
    _bind_tokenizer(remote, name, manifest, entry, tokenizer_files)
    return remote.dest / "datasets" / name
