"""The GPU benchmark's PyTorch side: the twin of src/Rank/Model/Gpt.cs (python/oec_gpt.py) trained and timed.

It trains python/oec_gpt.py's GPT (untied) on random tokens and prints exactly one JSON line on stdout (everything
else goes to stderr): median step time, tokens/s, MFU, peak memory and the loss of every step.
See src/OecRun/Bench/README.md for the contract.
"""
import argparse, inspect, json, os, statistics, sys, time

import torch

# The model is the shipped module python/oec_gpt.py: beside this file's folder in the published program, at the
# repository's root in a checkout.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(_here, "..", "python"), os.path.join(_here, "..", "..", "..", "python")]
from oec_gpt import GPT  # noqa: E402


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
