"""Our GPT in PyTorch: build it from a model.safetensors that oecrun wrote, and compute its loss as training does.

    import oec_gpt
    model, config = oec_gpt.load("runs/my-run/model.safetensors")      # config: the run's resolved configuration
    logits = model.logits(idx)                                          # idx [B, T] int64 -> [B, T, V] fp32
    logits, loss, cross_entropy = oec_gpt.head_loss(model, idx, targets, config["oec"])

or, from a shell: python3 oec_gpt.py MODEL [--batch BATCH.json] prints one JSON line (the model's shape and parameter
count; with a batch {"inputs": [[ids of a row]...], "targets": [[...]...]}, also its loss and cross-entropy).

The model is src/Rank/Model/Gpt.cs with the head of src/Oec/OutputEmbedding.cs: a pre-LN GPT, LayerNorms without bias
(eps 1e-5), qk-LayerNorm per head, rotary positions on the first half of each head's dimensions (interleaved pairs,
base 10000), a SwiGLU MLP (hidden 256 * ceil(8d/3 / 256)), no biases, the output embedding E [V, d] untied (lm_head) or
tied (wte.weight), fp32 logits over the padded vocabulary V. Parameter names are Gpt.cs's, so a state dict maps one to
one (README, "Our models in PyTorch"). It is also the GPU benchmark's twin (src/OecRun/Bench/gpt_reference.py) and the
reference test's model (tests/OecRun.FunctionalTests/pytorch_reference.py). Runs on PyTorch 1.13 and 2.x; needs
nothing but torch (safetensors is read here: an 8-byte header length, a JSON header, the raw little-endian data).
"""
import argparse, json, math, struct

import torch
import torch.nn as nn
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "F64": torch.float64, "BF16": torch.bfloat16, "F16": torch.float16, "I64": torch.int64}


def read_safetensors(path):  # -> ({name: tensor}, metadata {str: str})
    with open(path, "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        data = f.read()
    metadata = header.pop("__metadata__", {})
    tensors = {name: torch.frombuffer(bytearray(data[e["data_offsets"][0]:e["data_offsets"][1]]), dtype=DTYPES[e["dtype"]])
               .reshape(e["shape"]) for name, e in header.items()}
    return tensors, metadata


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


def padded_vocab(config):  # the rows of the embeddings: data's vocabulary rounded up to model.vocab_multiple (Gpt.cs)
    vocab, multiple = config["data"]["resolved_vocab_size"], config["model"]["vocab_multiple"]
    return (vocab + multiple - 1) // multiple * multiple


def load(path):  # model.safetensors (or a checkpoint's) -> (GPT with its weights, the run's configuration as a dict)
    tensors, metadata = read_safetensors(path)
    if "config" not in metadata:
        raise ValueError(f"{path}: no configuration in the safetensors metadata (not written by oecrun's Checkpoint.Save)")
    config = json.loads(metadata["config"])
    missing = [s for s in ("model", "data", "train", "oec") if s not in config]
    if missing:
        raise ValueError(f"{path}: its configuration lacks the section(s) {', '.join(missing)}")
    m = config["model"]
    model = GPT(padded_vocab(config), m["d_model"], m["n_layer"], m["n_head"], config["train"]["sequence_length"], tied=m["weight_tying"])
    model.load_state_dict({name: t.float() for name, t in tensors.items()})  # strict: every name one to one
    return model, config


def head_loss(model, idx, targets, oec):  # idx [B, T], targets [B*T]; oec: the configuration's "oec" section
    """-> logits [B*T, V] after the method's transform, the training loss, the mean cross-entropy (as ChunkedHead.Loss)."""
    method = oec["method"]
    logits = model.logits(idx).flatten(0, 1)                              # [N, V] fp32
    if method == "soft_cap":                                              # l -> c * tanh(l / c)
        logits = oec["soft_cap"] * torch.tanh(logits / oec["soft_cap"])
    cross_entropy = F.cross_entropy(logits, targets)
    loss = cross_entropy
    if method == "z_loss":                                                # lambda * mean over tokens of (log Z)^2
        loss = loss + oec["z_loss_lambda"] * torch.logsumexp(logits, -1).square().mean()
    if method == "mu_loss":                                               # lambda * ||mu||^2, mu over all V rows
        loss = loss + oec["mu_loss_lambda"] * model.E.mean(0).square().sum()
    return logits, loss, cross_entropy


def main():
    p = argparse.ArgumentParser(description="Load an oecrun model.safetensors in PyTorch; print its shape, and the loss on a batch.")
    p.add_argument("model", help="model.safetensors, or a checkpoint's, as oecrun wrote it")
    p.add_argument("--batch", help='JSON {"inputs": [[ids]...], "targets": [[ids]...]}, rows of equal length')
    a = p.parse_args()
    try:
        model, config = load(a.model)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        p.error(f"{a.model}: {e}")
    out = {"vocab": model.E.shape[0], "d_model": model.E.shape[1], "n_layer": len(model.h), "tied": model.lm_head is None,
           "method": config["oec"]["method"], "parameters": sum(t.numel() for t in model.parameters())}
    if a.batch:
        with open(a.batch) as f:
            batch = json.load(f)
        idx, targets = torch.tensor(batch["inputs"], dtype=torch.int64), torch.tensor(batch["targets"], dtype=torch.int64)
        if idx.shape != targets.shape or idx.dim() != 2:
            p.error(f"--batch {a.batch}: inputs {list(idx.shape)} and targets {list(targets.shape)} must be the same [B, T]")
        with torch.no_grad():
            _, loss, cross_entropy = head_loss(model, idx, targets.flatten(), config["oec"])
        out.update(loss=loss.item(), cross_entropy=cross_entropy.item())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
