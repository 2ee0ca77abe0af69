"""prepare.py: corpora, documents, tokenizer byte lengths, the fingerprint, the cache, the metric."""

import functools
import http.server
import json
import math
import subprocess
import sys
import threading
import time

import pytest
import torch

from arx.train import prepare as prep

# -- the metric -----------------------------------------------------------------------------------

def uniform_model(vocab):
    """A stand-in model whose per-token cross-entropy is ln(vocab): a uniform prediction."""
    return lambda x, y, reduction: torch.full(y.shape, math.log(vocab), dtype=torch.float64)


def test_evaluate_bpb_hand_computed_uniform():
    # windows of 2: x=[0,1] y=[1,2]; x=[2,3] y=[3,0]. Token 0 is special (0 bytes): left out.
    # nats = 3 * ln 4 = 6 ln 2; bytes = 1 + 2 + 3 + 0 = 6; bpb = 6 ln 2 / (ln 2 * 6) = 1.
    tokens = torch.tensor([0, 1, 2, 3, 0])
    token_bytes = torch.tensor([0, 1, 2, 3])
    bpb = prep.evaluate_bpb(uniform_model(4), tokens, token_bytes, seq_len=2, batch_size=1)
    assert bpb == pytest.approx(1.0, abs=1e-12)


def test_evaluate_bpb_hand_computed_per_token_nats_and_cap():
    # nats of a target = its id: targets 1, 2, 3 count 6 nats over 6 bytes -> 1 / ln 2 bits/byte.
    def model(x, y, reduction):
        assert reduction == "none"
        return y.float()

    tokens = torch.tensor([0, 1, 2, 3, 0, 3, 3, 3, 3])
    token_bytes = torch.tensor([0, 1, 2, 3])
    capped = prep.evaluate_bpb(model, tokens, token_bytes, seq_len=2, batch_size=2, max_tokens=4)
    assert capped == pytest.approx(1 / math.log(2), abs=1e-12)
    # all 4 windows: targets 1,2,3,0,3,3,3,3 -> nats 6 + 12 = 18 over 6 + 12 = 18 bytes: same.
    full = prep.evaluate_bpb(model, tokens, token_bytes, seq_len=2, batch_size=3)
    assert full == pytest.approx(1 / math.log(2), abs=1e-12)


def test_evaluate_bpb_batching_does_not_change_the_value():
    torch.manual_seed(0)
    tokens = torch.randint(0, 50, (1001,))
    token_bytes = torch.randint(0, 4, (50,))
    model = lambda x, y, reduction: (x * 7 + y).float().sin().abs()  # noqa: E731
    values = {prep.evaluate_bpb(model, tokens, token_bytes, 10, b) for b in (1, 3, 100)}
    assert max(values) - min(values) < 1e-9


# -- documents and tokenizer ----------------------------------------------------------------------

def test_split_documents_cuts_at_blank_lines_under_the_limit():
    text = "\n\n".join(["a" * 30, "b" * 30, "c" * 30, "d" * 100])
    docs = prep.split_documents(text, max_chars=70)
    assert docs == ["a" * 30 + "\n\n" + "b" * 30, "c" * 30, "d" * 70, "d" * 30]
    assert prep.split_documents("\n\n \n\n") == []


def test_token_byte_lengths_sum_to_utf8_bytes(data_dir):
    tok = prep.load_tokenizer(data_dir)
    lengths = prep.token_byte_lengths(tok)
    assert lengths[tok.token_to_id(prep.BOS_TOKEN)] == 0
    for text in ("Hello, wörld!", "naïve café — “quoted” 你好 🎭", "  x\n\n\ty"):
        ids = tok.encode(text).ids
        assert int(lengths[ids].sum()) == len(text.encode("utf-8"))
        assert tok.decode(ids) == text


def test_prepared_data_layout(data_dir, texts):
    meta = json.loads((data_dir / "meta.json").read_text())
    assert meta["corpus"] == "text"
    # 40 one-document files: every 20th document (the 20th, the 40th) is validation
    assert (meta["train_documents"], meta["val_documents"]) == (38, 2)
    data = prep.Data(data_dir)
    assert data.train.numel() == meta["train_tokens"] and data.val.numel() == meta["val_tokens"]
    bos = data.tokenizer.token_to_id(prep.BOS_TOKEN)
    assert data.val[0] == bos and int((data.val == bos).sum()) == 2
    assert data.fingerprint == meta["fingerprint"][:12]
    val_text = "".join((texts / f"text_{i:02d}.txt").read_text() for i in (19, 39))
    assert data.tokenizer.decode(data.val.tolist(), skip_special_tokens=True) == val_text


# -- the cache: idempotent, fingerprinted ---------------------------------------------------------

def test_second_prepare_is_a_noop_and_changed_data_changes_the_fingerprint(tmp_path, make_texts):
    texts = make_texts(tmp_path / "texts", seed=1)
    d = tmp_path / "data"
    first = prep.prepare("text", [texts], d, quiet=True)
    stamps = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    t0 = time.perf_counter()
    again = prep.prepare("text", [texts], d, quiet=True)
    assert time.perf_counter() - t0 < 1.0
    assert again == first
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == stamps  # nothing rewritten

    with open(texts / "text_05.txt", "a", encoding="utf-8") as f:
        f.write("\nA new line the first preparation never saw.\n")
    changed = prep.prepare("text", [texts], d, quiet=True)
    assert changed["fingerprint"] != first["fingerprint"]
    assert changed["source_sha256"] != first["source_sha256"]
    # same inputs, fresh directory: the same fingerprint (tokenizer training is deterministic)
    assert prep.prepare("text", [texts], tmp_path / "again", quiet=True) == changed


def test_cli_prepares_then_reports_already_prepared(tmp_path, texts, train_dir):
    cmd = [sys.executable, str(train_dir / "prepare.py"), "--text", str(texts),
           "--data-dir", str(tmp_path / "d"), "--vocab-size", "256"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert meta["vocab_size"] == 257  # plain bytes + BOS
    assert meta["fingerprint"][:12] in first.stdout
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and "already prepared" in second.stdout


def test_unknown_text_path_and_too_little_text_are_refused(tmp_path):
    with pytest.raises(SystemExit, match="no such file"):
        prep.prepare("text", [tmp_path / "missing.txt"], tmp_path / "d", quiet=True)
    (tmp_path / "one.txt").write_text("just one short document\n")
    with pytest.raises(SystemExit, match="give more text"):
        prep.prepare("text", [tmp_path / "one.txt"], tmp_path / "d", quiet=True)


def test_stdlib_corpus_reads_python_sources():
    sources = prep.stdlib_sources()
    names = [name for name, _ in sources]
    assert "os.py" in names and "json/decoder.py" in names
    assert not any(n.startswith(("test/", "site-packages/")) for n in names)
    assert sum(len(text) for _, text in sources) > 1_000_000


# -- climbmix: the real download and parquet path, against a local HTTP server ---------------------

@pytest.fixture
def shard_server(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    served = tmp_path / "served"
    served.mkdir()
    rows = [f"Document {i}. " + " ".join(f"word{(i * j) % 97}" for j in range(60))
            for i in range(60)]
    pq.write_table(pa.table({"text": rows, "id": list(range(60))}),
                   served / "shard_00000.parquet")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", rows
    server.shutdown()


def test_climbmix_downloads_the_shard_and_reads_its_text_column(tmp_path, shard_server):
    url, rows = shard_server
    d = tmp_path / "data"
    meta = prep.prepare("climbmix", directory=d, climbmix_url=url, quiet=True)
    assert (d / "raw" / "climbmix" / "shard_00000.parquet").exists()
    assert (meta["corpus"], meta["train_documents"], meta["val_documents"]) == ("climbmix", 57, 3)
    data = prep.Data(d)
    val_text = data.tokenizer.decode(data.val.tolist(), skip_special_tokens=True)
    assert val_text == rows[19] + rows[39] + rows[59]
    # the shard is cached: a dead URL does not matter the second time
    assert prep.prepare("climbmix", directory=d, climbmix_url="http://127.0.0.1:9",
                        quiet=True) == meta


def test_climbmix_download_failure_is_reported(tmp_path, monkeypatch):
    pytest.importorskip("pyarrow")
    monkeypatch.setattr(prep.time, "sleep", lambda s: None)
    with pytest.raises(SystemExit, match="download failed"):
        prep.prepare("climbmix", directory=tmp_path, climbmix_url="http://127.0.0.1:9",
                     quiet=True)
