"""Training throughput of arx's default target, next to a plain loop training a model of the same size.

    python bench/train_throughput.py [--steps 40] [--repeats 2]

1. target: train/train.py at its default config, run as `python train.py` with TRAIN_STEPS set;
   tokens/s = tokens of the counted steps / training_seconds (the 2 warm-up steps are excluded,
   as in the script's own budget).
2. plain: the same shapes (vocab, width, depth, heads, 4x MLP, context, tokens per step, micro
   batch) as a textbook GPT: learned positions, LayerNorm, GELU, causal SDPA, one AdamW, no
   rotary, QK-norm, sliding windows, residual scalars or Muon; fed by the same loader.
Both run in this process's machine and thread count, alternating, `--repeats` times each; the
best of each is printed, since on a shared machine the best run is the least disturbed one.
Needs the data prepared (`python train/prepare.py`).
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

TRAIN = Path(__file__).resolve().parent.parent / "train"
sys.path.insert(0, str(TRAIN))
from prepare import Data, train_batches  # noqa: E402

SKIP = 2  # warm-up steps not timed, as in train.py on CPU


def constants():
    src = (TRAIN / "train.py").read_text()
    return {m.group(1): eval(m.group(2)) for m in
            re.finditer(r"^([A-Z][A-Z0-9_]*) = ([^#\n]*?)\s+#", src, re.M)}


def target_tokens_per_second(steps):
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("train.py", "prepare.py"):
            shutil.copy(TRAIN / name, tmp)
        path = Path(tmp) / "train.py"
        path.write_text(re.sub(r"^TRAIN_STEPS = [^#\n]*?(\s+#)", rf"TRAIN_STEPS = {steps}\1",
                               path.read_text(), flags=re.M))
        out = subprocess.run([sys.executable, "train.py"], cwd=tmp, capture_output=True,
                             text=True, check=True).stdout
    summary = dict(re.findall(r"^(\w+):\s+(\S+)$", out, re.M))
    tokens = (int(summary["num_steps"]) - SKIP) * constants()["TOTAL_BATCH_SIZE"]
    return tokens / float(summary["training_seconds"]), summary["num_params_M"]


class PlainBlock(nn.Module):
    def __init__(self, dim, n_head):
        super().__init__()
        self.n_head = n_head
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim, bias=False), nn.Linear(dim, dim, bias=False)
        self.fc, self.out = nn.Linear(dim, 4 * dim, bias=False), nn.Linear(4 * dim, dim, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.n_head, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class PlainGPT(nn.Module):
    def __init__(self, vocab, dim, depth, n_head, seq_len):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, dim), nn.Embedding(seq_len, dim)
        self.blocks = nn.Sequential(*(PlainBlock(dim, n_head) for _ in range(depth)))
        self.ln, self.head = nn.LayerNorm(dim), nn.Linear(dim, vocab, bias=False)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1)))
        logits = self.head(self.ln(self.blocks(x)))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def plain_tokens_per_second(data, c, steps):
    width = (c["DEPTH"] * c["ASPECT_RATIO"] + c["HEAD_DIM"] - 1) // c["HEAD_DIM"] * c["HEAD_DIM"]
    torch.manual_seed(0)
    model = PlainGPT(data.vocab_size, width, c["DEPTH"], width // c["HEAD_DIM"], c["MAX_SEQ_LEN"])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    micro = max(1, min(c["DEVICE_BATCH_SIZE"], c["TOTAL_BATCH_SIZE"] // c["MAX_SEQ_LEN"]))
    accum = c["TOTAL_BATCH_SIZE"] // (micro * c["MAX_SEQ_LEN"])
    batches = train_batches(data.train, micro, c["MAX_SEQ_LEN"], torch.Generator().manual_seed(0))
    timed = 0.0
    for step in range(steps):
        t0 = time.time()
        for _ in range(accum):
            x, y = next(batches)
            (model(x, y) / accum).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= SKIP:
            timed += time.time() - t0
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return (steps - SKIP) * c["TOTAL_BATCH_SIZE"] / timed, f"{params:.3f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    data, c = Data(), constants()
    target, plain = [], []
    for _ in range(args.repeats):
        target.append(target_tokens_per_second(args.steps))
        plain.append(plain_tokens_per_second(data, c, args.steps))
    (t, t_params), (p, p_params) = max(target), max(plain)
    print(f"threads {torch.get_num_threads()}, {args.steps} steps x {c['TOTAL_BATCH_SIZE']} tokens,"
          f" best of {args.repeats}; data {data.fingerprint}")
    print(f"target (train/train.py): {t:10,.0f} tok/s  ({t_params}M params)")
    print(f"plain reference loop:    {p:10,.0f} tok/s  ({p_params}M params)")
    print(f"target / plain:          {t / p:10.2f}")


if __name__ == "__main__":
    main()
