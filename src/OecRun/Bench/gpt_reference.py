"""PyTorch reference of src/Rank/Model/Gpt.cs (plus the head of src/Oec/OutputEmbedding.cs): the GPU benchmark's twin.

Run as a program, it trains the same GPT (untied) on random tokens and prints exactly one JSON line on stdout (everything
else goes to stderr): median step time, tokens/s, MFU, peak memory and the loss of every step. Imported, it is the model
that tests/Rank.UnitTests/pytorch_reference.py compares ours against (tied or untied), on PyTorch 1.13 too.
See src/OecRun/Bench/README.md for the contract.
"""
import argparse, inspect, json, math, os, statistics, sys, time

import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm(nn.Module):
    """LayerNorm without bias, eps 1e-5 (nn.LayerNorm(bias=False) needs torch >= 2.1)."""
    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))

    def forward(self, x):
        # In fp32 as in Gpt.cs (CUDA autocast does this cast itself; CPU autocast of torch 1.13 does not).
        return F.layer_norm(x.float(), self.weight.shape, self.weight, None, 1e-5)


class Rotary(nn.Module):
    """Rotary positions on the first half of each head's dims, interleaved pairs, base 10000 (Gpt.cs's Rotary)."""
    def __init__(self, hs, max_seq):
        super().__init__()
        self.rotated = hs // 2
        inv_freq = 1.0 / 10000 ** (torch.arange(0, self.rotated, 2, dtype=torch.float32) / self.rotated)  # [hs/4]
        angles = torch.outer(torch.arange(max_seq, dtype=torch.float32), inv_freq).repeat_interleave(2, dim=1)  # [T, hs/2]
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x):  # x [B, nh, T, hs] -> same shape
        T = x.size(2)
        rot, rest = x[..., :self.rotated], x[..., self.rotated:]
        pairs = rot.unflatten(-1, (self.rotated // 2, 2))                           # [B, nh, T, hs/4, 2]
        turned = torch.stack((-pairs[..., 1], pairs[..., 0]), -1).flatten(-2)       # (x1, x2) -> (-x2, x1)
        c, s = self.cos[:T].to(x.dtype), self.sin[:T].to(x.dtype)
        return torch.cat((rot * c + turned * s, rest), -1)


def causal_attention(q, k, v):  # [B, nh, T, hs] each
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    # torch < 2.0 (Debian's 1.13): explicit causal softmax attention
    T = q.size(-2)
    att = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))                          # [B, nh, T, T]
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    att = att.masked_fill(~mask, float("-inf")).softmax(-1)
    return att.to(v.dtype) @ v


class CausalSelfAttention(nn.Module):
    def __init__(self, d, nh, max_seq):
        super().__init__()
        self.nh = nh
        self.c_attn = nn.Linear(d, 3 * d, bias=False)
        self.c_proj = nn.Linear(d, d, bias=False)
        self.q_layernorm, self.k_layernorm = LayerNorm(d // nh), LayerNorm(d // nh)  # per head, over hs
        self.rotary = Rotary(d // nh, max_seq)

    def forward(self, x):
        B, T, C = x.shape
        qkv = self.c_attn(x).view(B, T, 3, self.nh, C // self.nh).permute(2, 0, 3, 1, 4)  # [3, B, nh, T, hs]
        q = self.rotary(self.q_layernorm(qkv[0]))
        k = self.rotary(self.k_layernorm(qkv[1]))
        y = causal_attention(q, k, qkv[2])                                               # [B, nh, T, hs]
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class SwiGLU(nn.Module):
    """W_2(silu(W x) * V x), hidden = 256 * ceil((8d/3) / 256) as Gpt.cs's SwiGlu.HiddenSize."""
    def __init__(self, d):
        super().__init__()
        hidden = 256 * ((8 * d // 3 + 255) // 256)
        self.W, self.V = nn.Linear(d, hidden, bias=False), nn.Linear(d, hidden, bias=False)
        self.W_2 = nn.Linear(hidden, d, bias=False)

    def forward(self, x):
        return self.W_2(F.silu(self.W(x)) * self.V(x))


class Block(nn.Module):
    def __init__(self, d, nh, max_seq):
        super().__init__()
        self.ln_1, self.attn = LayerNorm(d), CausalSelfAttention(d, nh, max_seq)
        self.ln_2, self.mlp = LayerNorm(d), SwiGLU(d)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Body of Gpt.cs plus the head; forward returns the mean cross-entropy, so torch.compile sees the loss too.
    Parameter names are Gpt.cs's (wte.weight, h.0.attn.c_attn.weight, ..., ln_f.weight, lm_head): state dicts map one to one."""
    def __init__(self, V, d, n_layer, nh, max_seq, tied=False):
        super().__init__()
        self.wte = nn.Embedding(V, d)
        self.h = nn.ModuleList(Block(d, nh, max_seq) for _ in range(n_layer))
        self.ln_f = LayerNorm(d)
        self.lm_head = None if tied else nn.Parameter(torch.empty(V, d))  # E [V, d]; tied: E is wte.weight
        for p in self.parameters():  # initialisation does not matter for speed: matrices N(0, 0.02), LayerNorms 1
            if p.dim() == 2:
                nn.init.normal_(p, 0.0, 0.02)

    @property
    def E(self):  # the output embedding [V, d]
        return self.wte.weight if self.lm_head is None else self.lm_head

    def hidden(self, idx):  # idx [B, T] -> final hidden states [B, T, d], after ln_f (Gpt.cs's forward)
        x = self.wte(idx)                                            # [B, T, d]
        for block in self.h:
            x = block(x)
        return self.ln_f(x)

    def logits(self, idx):  # idx [B, T] -> [B, T, V] fp32
        # As OutputEmbedding.Logits: the matmul in the compute dtype (bf16 under autocast), logits and loss in fp32.
        return F.linear(self.hidden(idx), self.E).float()

    def forward(self, idx, targets):  # idx, targets [B, T]
        logits = self.logits(idx)                                    # [B, T, V]
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def main():
    p = argparse.ArgumentParser(description=__doc__)
    for name, default in [("d-model", 768), ("n-layer", 12), ("n-head", 12), ("vocab", 50304), ("seq", 1024),
                          ("batch", 16), ("steps", 30), ("warmup", 5), ("seed", 1337)]:
        p.add_argument("--" + name, type=int, default=default)
    p.add_argument("--mode", choices=["eager", "compile"], default="eager")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="peak for MFU (989: H200 dense bf16)")
    p.add_argument("--fused", action="store_true", help="torch.optim.AdamW(fused=True)")
    a = p.parse_args()
    # parser.error prints to stderr and exits with code 2
    if a.n_head < 1 or a.d_model % a.n_head:
        p.error(f"--d-model {a.d_model} is not divisible by --n-head {a.n_head}")
    if (a.d_model // a.n_head) % 4:
        p.error(f"head dim {a.d_model // a.n_head} (--d-model {a.d_model} / --n-head {a.n_head}) is not a multiple of 4: "
                "rotary rotates half of each head's dims in pairs")
    if min(a.d_model, a.n_layer, a.vocab, a.seq, a.batch, a.steps) < 1 or a.warmup < 0:
        p.error("--d-model, --n-layer, --vocab, --seq, --batch and --steps must be >= 1, --warmup >= 0")
    if a.mode == "compile" and not hasattr(torch, "compile"):
        p.error(f"--mode compile: torch.compile is not available in torch {torch.__version__} (needs >= 2.0)")
    if a.fused and "fused" not in inspect.signature(torch.optim.AdamW).parameters:
        p.error(f"--fused: torch.optim.AdamW of torch {torch.__version__} has no fused implementation")
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error(f"--device cuda: torch.cuda.is_available() is False (torch {torch.__version__}, CUDA build "
                f"{torch.version.cuda}, device count {torch.cuda.device_count()})")

    # Anything that writes to fd 1 from here on (compilers, C++ warnings) goes to stderr; the JSON line to the real stdout.
    stdout = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    cuda = a.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    if a.precision == "fp32":  # TF32 matmuls. The legacy flags on purpose: torch >= 2.9 warns about them, but its new
        # fp32_precision API next to inductor's legacy readers can fail torch.compile (pytorch/pytorch#166387).
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    torch.manual_seed(a.seed)
    model = GPT(a.vocab, a.d_model, a.n_layer, a.n_head, a.seq).to(a.device)
    params = sum(t.numel() for t in model.parameters())
    hidden = 256 * ((8 * a.d_model // 3 + 255) // 256)
    hs = a.d_model // a.n_head
    expected = 2 * a.vocab * a.d_model + a.n_layer * (4 * a.d_model ** 2 + 3 * a.d_model * hidden + 2 * a.d_model + 2 * hs) + a.d_model
    assert params == expected, (params, expected)  # the C# model's count: wte + lm_head + blocks + ln_f
    # nanoGPT/PaLM estimate: 6 N per token for the matmuls forward+backward (N counts the embedding parameters too)
    # plus 12 * L * T * d for attention's QK^T and AV.
    flops_per_token = 6 * params + 12 * a.n_layer * a.seq * a.d_model
    print(f"parameters {params}, flops/token {flops_per_token}", file=sys.stderr)

    optimizer = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0,
                                  **({"fused": True} if a.fused else {}))
    step_model = torch.compile(model) if a.mode == "compile" else model  # whole model, loss inside (GPT.forward)

    # One fixed [B, T+1] batch per step, drawn up front on the device: data loading is not measured.
    g = torch.Generator(device=a.device)
    g.manual_seed(a.seed)
    data = [torch.randint(0, a.vocab, (a.batch, a.seq + 1), generator=g, device=a.device) for _ in range(a.warmup + a.steps)]

    def sync():
        if cuda:
            torch.cuda.synchronize()

    losses, times = [], []
    for i, batch in enumerate(data):
        x, y = batch[:, :-1], batch[:, 1:]
        sync()
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        if a.precision == "bf16":  # fp32 master weights, bf16 compute
            with torch.autocast(device_type=a.device, dtype=torch.bfloat16):
                loss = step_model(x, y)
        else:
            loss = step_model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        sync()
        ms = (time.perf_counter() - t0) * 1e3
        losses.append(loss.detach())
        if i >= a.warmup:
            times.append(ms)
        print(f"step {i} {'warmup' if i < a.warmup else 'timed'} {ms:.1f} ms", file=sys.stderr)

    median_ms = statistics.median(times)
    tokens_per_s = a.batch * a.seq / (median_ms / 1e3)
    free, total = torch.cuda.mem_get_info() if cuda else (None, None)
    result = {
        "framework": "pytorch", "mode": a.mode, "precision": a.precision,
        "device": torch.cuda.get_device_name() if cuda else "cpu", "torch_version": torch.__version__,
        "parameters": params, "flops_per_token": flops_per_token,
        "batch": a.batch, "seq": a.seq, "steps": a.steps, "warmup": a.warmup,
        "median_ms": median_ms, "tokens_per_s": tokens_per_s,
        "mfu": flops_per_token * tokens_per_s / (a.peak_tflops * 1e12) if cuda else None,
        "peak_allocated_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "peak_reserved_bytes": torch.cuda.max_memory_reserved() if cuda else None,
        "device_used_bytes": total - free if cuda else None,
        "losses": [float(l) for l in losses], "fused": a.fused,
    }
    stdout.write(json.dumps(result) + "\n")
    stdout.flush()


if __name__ == "__main__":
    main()
