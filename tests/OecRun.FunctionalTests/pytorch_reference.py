"""PyTorch's side of PyTorchReferenceTests: our GPT's weights in; PyTorch's logits, loss, gradients and one step out.

usage: pytorch_reference.py DIR. Reads DIR/case.json (the batch, the model's shape, the optimizer's and the methods'
hyper-parameters) and, per head in case.json's "heads" (tied, untied), DIR/HEAD.safetensors (the weights as
Checkpoint.Save writes them); writes DIR/HEAD.METHOD.safetensors for each method: logits [B*T, V] (after the method's
transform), loss and cross_entropy (scalars), grad.NAME (the gradient of the loss) and step.NAME (the parameter after
clipping, one torch.optim.AdamW step and the method's after-step) for every parameter NAME. fp32 throughout, on the CPU.
The model and the methods' losses are the shipped module's, python/oec_gpt.py; the after-step is written here.
"""
import json, os, struct, sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
from oec_gpt import GPT, head_loss, read_safetensors  # noqa: E402


def write_safetensors(path, tensors):  # {name: fp32 tensor} -> the same format, header padded to 8 bytes with spaces
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        blob = t.detach().to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def step(model, method, c):  # clip, one AdamW step (decay on matrices and embeddings only), then mu-centering
    params = list(model.parameters())
    optimizer = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": c["weight_decay"]},
                                   {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                                  lr=c["lr"], betas=(c["beta1"], c["beta2"]), eps=c["eps"])
    torch.nn.utils.clip_grad_norm_(params, c["grad_clip"])
    optimizer.step()
    if method == "mu_centering":
        with torch.no_grad():
            model.E.sub_(model.E.mean(0))


def run(directory, head, method, c):
    model = GPT(c["vocab"], c["d_model"], c["n_layer"], c["n_head"], c["seq"], tied=head == "tied")
    model.load_state_dict(read_safetensors(os.path.join(directory, head + ".safetensors"))[0])  # strict: names one to one
    idx = torch.tensor(c["inputs"], dtype=torch.int64)                    # [B, T]
    targets = torch.tensor(c["targets"], dtype=torch.int64)               # [B*T]
    logits, loss, cross_entropy = head_loss(model, idx, targets, dict(c, method=method))
    loss.backward()
    out = {"logits": logits, "loss": loss, "cross_entropy": cross_entropy}
    out.update({"grad." + name: p.grad.clone() for name, p in model.named_parameters()})
    step(model, method, c)
    out.update({"step." + name: p for name, p in model.named_parameters()})
    write_safetensors(os.path.join(directory, f"{head}.{method}.safetensors"), out)


def main():
    directory = sys.argv[1]
    with open(os.path.join(directory, "case.json")) as f:
        c = json.load(f)
    torch.set_num_threads(1)  # one core of the test machine's few; the model is tiny
    for head in c["heads"]:
        for method in c["methods"]:
            run(directory, head, method, c)
    print(f"torch {torch.__version__}: {len(c['heads']) * len(c['methods'])} cases in {directory}")


if __name__ == "__main__":
    main()
