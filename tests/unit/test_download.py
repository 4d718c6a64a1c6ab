"""Tests of harness.datasets.download against a local fake of the Hugging Face Hub.

A `http.server` thread on 127.0.0.1 serves a small dataset in the upstream remote layout
(`datasets/manifest.json`, `datasets/datasets/fineweb10B_<v>/...`, `datasets/tokenizers/...`)
and answers what `huggingface_hub.hf_hub_download` asks of
``{endpoint}/datasets/{repo}/resolve/{revision}/{path}``: a HEAD carrying `X-Repo-Commit`,
`ETag` and `Content-Length`, then a GET of the bytes. Every request is logged so the tests
can count downloads. Shards are built by hand with `struct`, not with our writer.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import struct
import threading
from urllib.parse import unquote, urlsplit

import pytest
import sentencepiece as spm

from harness.api.errors import ConfigError, DataError
from harness.datasets.download import download_challenge_data
from harness.pipeline.shards import read_shard

REPO = "tester/fake-golf"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def shard(tokens: list[int]) -> bytes:
    return struct.pack("<256i", 20240520, 1, len(tokens), *([0] * 253)) + struct.pack(
        f"<{len(tokens)}H", *tokens
    )


def tiny_tokenizer() -> bytes:
    model = io.BytesIO()
    text = ["the quick brown fox jumps over the lazy dog " * 4, "parameter golf tiny tokenizer test"] * 20
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text),
        model_writer=model,
        model_type="bpe",
        vocab_size=40,
        hard_vocab_limit=False,
        minloglevel=2,
        num_threads=1,
    )
    return model.getvalue()


def remote_files() -> dict[str, bytes]:
    manifest = {
        "version": "10B",
        "tokenizers": [
            {
                "name": "sp_bpe_1024",
                "model_path": "tokenizers/fineweb_1024_bpe.model",
                "vocab_path": "tokenizers/fineweb_1024_bpe.vocab",
            }
        ],
        "datasets": [
            {
                "name": "fineweb10B_sp1024",
                "tokenizer_name": "sp_bpe_1024",
                "stats": {"files_train": 3, "files_val": 2},
            },
            {
                "name": "fineweb10B_byte260",
                "tokenizer_name": "sp_bpe_1024",
                "stats": {"files_train": 1, "files_val": 1},
            },
        ],
    }
    files = {"datasets/manifest.json": json.dumps(manifest).encode()}
    base = "datasets/datasets/fineweb10B_sp1024"
    for i in range(2):
        files[f"{base}/fineweb_val_{i:06d}.bin"] = shard([1, 10 + i, 20 + i])
    for i in range(3):
        files[f"{base}/fineweb_train_{i:06d}.bin"] = shard([1, 100 + i] * (i + 1))
    files["datasets/tokenizers/fineweb_1024_bpe.model"] = tiny_tokenizer()
    files["datasets/tokenizers/fineweb_1024_bpe.vocab"] = b"<unk>\t0\n"
    return files


class FakeHub:
    """A thread serving ``files`` the way the Hub's resolve endpoint does."""

    def __init__(self, files: dict[str, bytes], repo: str = REPO) -> None:
        self.files = files
        self.requests: list[tuple[str, str]] = []
        self.prefix = f"/datasets/{repo}/resolve/main/"
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, with_body: bool) -> None:
                path = unquote(urlsplit(self.path).path)
                hub.requests.append((self.command, path))
                name = path[len(hub.prefix) :] if path.startswith(hub.prefix) else None
                data = hub.files.get(name) if name is not None else None
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if with_body:
                    self.wfile.write(data)

            def do_HEAD(self) -> None:  # noqa: N802 (http.server naming)
                self._answer(False)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(True)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def gets(self) -> list[str]:
        return [p[len(self.prefix) :] for m, p in self.requests if m == "GET"]


@pytest.fixture
def hub(monkeypatch, tmp_path):
    for var in (
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_HUB_CACHE",
        "HF_ENDPOINT",
        "MATCHED_FINEWEB_REPO_ID",
        "MATCHED_FINEWEB_REMOTE_ROOT_PREFIX",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    fake = FakeHub(remote_files())
    fake.thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def fetch(hub, dest, **kw):
    kw.setdefault("repo_id", REPO)
    kw.setdefault("endpoint", hub.endpoint)
    return download_challenge_data(dest=dest, progress=False, **kw)


def test_downloads_expected_files_in_upstream_layout(hub, tmp_path):
    dest = tmp_path / "data"
    out = fetch(hub, dest, train_shards=2)
    assert out == dest / "datasets" / "fineweb10B_sp1024"
    assert sorted(p.name for p in out.iterdir()) == [
        "fineweb_train_000000.bin",
        "fineweb_train_000001.bin",
        "fineweb_val_000000.bin",
        "fineweb_val_000001.bin",
        "manifest.json",  # ours: the binding to the tokenizer
    ]
    for path in out.glob("*.bin"):
        assert path.read_bytes() == hub.files[f"datasets/datasets/fineweb10B_sp1024/{path.name}"]
    binding = json.loads((out / "manifest.json").read_text())
    model = hub.files["datasets/tokenizers/fineweb_1024_bpe.model"]
    assert binding["tokenizer_sha256"] == hashlib.sha256(model).hexdigest()
    assert binding["vocab_size"] == spm.SentencePieceProcessor(model_proto=model).vocab_size() == 40
    assert binding["source"] == {
        "repo_id": REPO,
        "remote_root": "datasets",
        "tokenizer": "tokenizers/fineweb_1024_bpe.model",
    }
    assert read_shard(out / "fineweb_val_000001.bin").tolist() == [1, 11, 21]
    assert read_shard(out / "fineweb_train_000001.bin").tolist() == [1, 101, 1, 101]
    assert sorted(p.name for p in (dest / "tokenizers").iterdir()) == [
        "fineweb_1024_bpe.model",
        "fineweb_1024_bpe.vocab",
    ]
    assert json.loads((dest / "manifest.json").read_text())["version"] == "10B"
    assert "fineweb_train_000002.bin" not in " ".join(hub.gets())
    assert not list(dest.rglob("*.tmp-*"))


def test_second_call_downloads_nothing(hub, tmp_path):
    fetch(hub, tmp_path / "data", train_shards=3)
    assert len(hub.gets()) == 1 + 2 + 3 + 2  # manifest, val, train, tokenizer files
    before = len(hub.requests)
    fetch(hub, tmp_path / "data", train_shards=3)
    fetch(hub, tmp_path / "data", train_shards=1)
    assert len(hub.requests) == before


def test_invalid_local_shard_is_replaced(hub, tmp_path):
    out = fetch(hub, tmp_path / "data", train_shards=1)
    target = out / "fineweb_val_000000.bin"
    # Written in place, so the hard-linked HF cache blob is damaged as well.
    target.write_bytes(target.read_bytes()[:-2])
    hub.requests.clear()
    fetch(hub, tmp_path / "data", train_shards=1)
    assert hub.gets() == ["datasets/datasets/fineweb10B_sp1024/fineweb_val_000000.bin"]
    assert read_shard(target).tolist() == [1, 10, 20]


def test_train_shard_bounds(hub, tmp_path):
    with pytest.raises(DataError) as err:
        fetch(hub, tmp_path / "data", train_shards=4)
    assert "4" in str(err.value) and "only 3" in str(err.value)
    out = fetch(hub, tmp_path / "data", train_shards=0)
    assert sorted(p.name for p in out.glob("*.bin")) == ["fineweb_val_000000.bin", "fineweb_val_000001.bin"]
    with pytest.raises(ConfigError):
        fetch(hub, tmp_path / "data", train_shards=-1)


def test_unknown_variant_lists_available(hub, tmp_path):
    with pytest.raises(DataError) as err:
        fetch(hub, tmp_path / "data", variant="sp4096", train_shards=0)
    msg = str(err.value)
    assert "sp4096" in msg and "byte260" in msg and "sp1024" in msg


@pytest.mark.parametrize("damage", ["magic", "size"])
def test_corrupt_shard_rejected_and_not_placed(hub, tmp_path, damage):
    name = "datasets/datasets/fineweb10B_sp1024/fineweb_train_000001.bin"
    good = hub.files[name]
    hub.files[name] = struct.pack("<i", 42) + good[4:] if damage == "magic" else good[:-1]
    dest = tmp_path / "data"
    with pytest.raises(DataError) as err:
        fetch(hub, dest, train_shards=2)
    assert "fineweb_train_000001.bin" in str(err.value) and damage in str(err.value)
    assert not (dest / "datasets" / "fineweb10B_sp1024" / "fineweb_train_000001.bin").exists()
    # The bad copy was evicted from the HF cache: once the server is fixed, a retry works.
    hub.files[name] = good
    out = fetch(hub, dest, train_shards=2)
    assert (out / "fineweb_train_000001.bin").read_bytes() == good


def test_environment_read_at_call_time(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("MATCHED_FINEWEB_REPO_ID", REPO)
    out = download_challenge_data(train_shards=1, dest=tmp_path / "data", progress=False)
    assert (out / "fineweb_train_000000.bin").is_file()
    assert (tmp_path / "hf_home" / "hub").is_dir()  # HF_HOME set after import was honoured


def test_manifest_from_other_repo_is_refetched(hub, tmp_path):
    dest = tmp_path / "data"
    fetch(hub, dest, train_shards=0)
    hub.files = {k.replace("datasets/", "other/", 1): v for k, v in hub.files.items()}
    hub.files["other/manifest.json"] = hub.files["other/manifest.json"].replace(b'"10B"', b'"other"')
    hub.requests.clear()
    with pytest.raises(DataError):  # same repo, but nothing under the new root
        fetch(hub, dest, train_shards=0, remote_root="missing")
    assert hub.requests  # the stale local manifest was not trusted
    fetch(hub, dest, train_shards=0, remote_root="other")
    assert "other/manifest.json" in hub.gets()
    assert json.loads((dest / "manifest.json").read_text())["version"] == "other"


SP8192_REPO = "kevclark/parameter-golf"  # where the SP8192 records' READMEs point MATCHED_FINEWEB_REPO_ID


def small_byte_fallback_tokenizer() -> bytes:
    """A stand-in for fineweb_8192_bpe.model: same kind (BPE, byte fallback), fewer pieces."""
    model = io.BytesIO()
    text = ["pre-tokenized shards and their tokenizer travel together " * 3, "vocabulary 8192 golf"] * 30
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text),
        model_writer=model,
        model_type="bpe",
        vocab_size=300,
        byte_fallback=True,
        hard_vocab_limit=False,
        add_dummy_prefix=False,
        minloglevel=2,
        num_threads=1,
    )
    return model.getvalue()


def sp8192_files(listed_vocab: int | None = None) -> dict[str, bytes]:
    """An SP8192 export in upstream's layout, with shards really encoded by its tokenizer."""
    model = small_byte_fallback_tokenizer()
    sp = spm.SentencePieceProcessor(model_proto=model)
    tokenizer = {
        "name": "sp_bpe_8192",
        "kind": "sentencepiece_bpe",
        "vocab_size": sp.vocab_size() if listed_vocab is None else listed_vocab,
        "model_path": "tokenizers/fineweb_8192_bpe.model",
        "vocab_path": "tokenizers/fineweb_8192_bpe.vocab",
    }
    dataset = {
        "name": "fineweb10B_sp8192",
        "tokenizer_name": "sp_bpe_8192",
        "stats": {"files_train": 1, "files_val": 1},
    }
    base = "datasets/datasets/fineweb10B_sp8192"
    docs = ["their tokenizer travels with the shards", "golf vocabulary shards together"] * 20
    tokens = [t for ids in sp.encode(docs) for t in (1, *ids)]
    return {
        "datasets/manifest.json": json.dumps({"tokenizers": [tokenizer], "datasets": [dataset]}).encode(),
        f"{base}/fineweb_val_000000.bin": shard(tokens),
        f"{base}/fineweb_train_000000.bin": shard(tokens[::-1]),
        "datasets/tokenizers/fineweb_8192_bpe.model": model,
        "datasets/tokenizers/fineweb_8192_bpe.vocab": b"<pad>\t0\n",
    }


@pytest.fixture
def sp8192_hub(hub):
    """The SP8192 export served under its own repo (the `hub` fixture set up the environment)."""
    fake = FakeHub(sp8192_files(), repo=SP8192_REPO)
    fake.thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_sp8192_variant_comes_from_its_repo_and_is_bound(sp8192_hub, tmp_path):
    from harness.pipeline.data_binding import check_data_binding

    dest = tmp_path / "data"
    out = download_challenge_data("sp8192", 1, dest, endpoint=sp8192_hub.endpoint, progress=False)
    assert out == dest / "datasets" / "fineweb10B_sp8192"
    assert set(sp8192_hub.gets()) == {
        "datasets/manifest.json",
        "datasets/datasets/fineweb10B_sp8192/fineweb_val_000000.bin",
        "datasets/datasets/fineweb10B_sp8192/fineweb_train_000000.bin",
        "datasets/tokenizers/fineweb_8192_bpe.model",
        "datasets/tokenizers/fineweb_8192_bpe.vocab",
    }
    model = dest / "tokenizers" / "fineweb_8192_bpe.model"
    assert model.read_bytes() == sp8192_hub.files["datasets/tokenizers/fineweb_8192_bpe.model"]
    binding = json.loads((out / "manifest.json").read_text())
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    assert binding["tokenizer_sha256"] == sha and binding["source"]["repo_id"] == SP8192_REPO
    vocab = binding["vocab_size"]
    assert check_data_binding(out, model, sha, vocab) == "binding:manifest"
    other = tmp_path / "other.model"
    other.write_bytes(tiny_tokenizer())
    with pytest.raises(DataError, match="sha256"):
        check_data_binding(out, other, hashlib.sha256(other.read_bytes()).hexdigest(), vocab)


def test_explicit_repo_still_wins_over_the_variant_default(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("MATCHED_FINEWEB_REPO_ID", REPO)
    with pytest.raises(DataError, match=f"unknown variant 'sp8192'.*{REPO}|{REPO}.*sp8192"):
        download_challenge_data("sp8192", 0, tmp_path / "data", endpoint=hub.endpoint, progress=False)


def test_tokenizer_disagreeing_with_hub_manifest_is_refused(hub, tmp_path):
    fake = FakeHub(sp8192_files(listed_vocab=8192), repo=SP8192_REPO)
    fake.thread.start()
    try:
        with pytest.raises(DataError, match="vocab size .* 8192"):
            download_challenge_data("sp8192", 0, tmp_path / "data", endpoint=fake.endpoint, progress=False)
    finally:
        fake.server.shutdown()
        fake.server.server_close()


@pytest.mark.parametrize("variant", ["sp", "sp8192x", "bytes", "../sp1024", ""])
def test_malformed_variant_is_a_config_error(variant, tmp_path):
    with pytest.raises(ConfigError, match="sp<VOCAB_SIZE>"):
        download_challenge_data(variant, 0, tmp_path / "data", progress=False)


def test_cli_names_the_bound_tokenizer(sp8192_hub, hub, tmp_path, monkeypatch, capsys):
    from harness.tools.cli import main

    monkeypatch.setenv("HF_ENDPOINT", sp8192_hub.endpoint)
    dest = tmp_path / "data"
    fetch(hub, dest, train_shards=0)  # a second tokenizer in data/tokenizers: the CLI must not guess
    capsys.readouterr()
    assert main(["data", "download", "--variant", "sp8192", "--train-shards", "0", "--dest", str(dest)]) == 0
    out = capsys.readouterr().out
    assert f"tokenizer: {(dest / 'tokenizers' / 'fineweb_8192_bpe.model').resolve()}\n" in out
    assert "fineweb_1024_bpe.model" not in out
