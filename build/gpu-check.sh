#!/usr/bin/env bash
# The checks that need a GPU, in one run on a machine with an NVIDIA GPU, PyTorch (torch with CUDA, NCCL from its
# wheels) and no .NET: the oecrun bundle from build/publish-bundle.sh is unpacked and run against PyTorch's libtorch.
#
#   here:        build/publish-bundle.sh none                      (dist/oecrun-linux-x64.tar.xz, about 40 MB)
#   GPU machine: build/gpu-check.sh [OUT]                           (OUT defaults to $OUT, else ./gpu-check)
#
# Writes into OUT: nvidia-smi.txt, torch-info.txt; curves/ and curves.txt (fp32 and bf16 on cuda over 200 steps of
# the default model, judged as MixedPrecisionTests judges them on the CPU); resume.txt (a run resumed from its
# step-100 checkpoint against the uninterrupted one); bench-gpu-bf16.md and bench-gpu-fp32.md (oecrun against PyTorch eager and torch.compile, docs/benchmarks.md).
# Every step prints what it runs; the first failure stops the script with its exit code.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-${OUT:-gpu-check}}")
mkdir -p "$out/curves" "$out/resume"
bundle=dist/oecrun-linux-x64.tar.xz
[ -f "$bundle" ] || { echo "gpu-check: $bundle not found: run build/publish-bundle.sh none first and carry dist/" >&2; exit 2; }
work=$(mktemp -d)
tar -C "$work" -xJf "$bundle"
oecrun="$work/oecrun-linux-x64/oecrun"

torchlib=$(python3 -c "import torch,os;print(os.path.dirname(torch.__file__)+'/lib')")
ncclib=$(python3 -c "import nvidia.nccl,os;print(list(nvidia.nccl.__path__)[0]+'/lib')" 2>/dev/null || true)
export OEC_LIBTORCH=python OEC_LIBTORCH_ANY_VERSION=1 DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1
export LD_LIBRARY_PATH="$torchlib${ncclib:+:$ncclib}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
step() { echo "== $*" >&2; }

step "nvidia-smi, torch-info"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
"$oecrun" torch-info | tee "$out/torch-info.txt"
grep -q "^cuda: available" "$out/torch-info.txt" || { echo "gpu-check: oecrun sees no CUDA device" >&2; exit 1; }

# One process on cuda:0: a local job of world size 1 (NCCL on one GPU runs only at world size 1).
gpu=(train.device=cuda job.world_size=1 job.backend=nccl)

step "bf16 and fp32 loss curves on the GPU, 200 steps"
for run in fp32:1337 fp32:1338 bf16:1337; do
    "$oecrun" train "${gpu[@]}" train.steps=200 train.log_every=1 train.precision="${run%:*}" train.seed="${run#*:}" \
        job.checkpoint_every=0 run.out_dir="$out/curves/${run/:/-}" > "$out/curves/${run/:/-}.log" 2>&1 \
        || { tail -5 "$out/curves/${run/:/-}.log" >&2; exit 1; }
done
python3 - "$out/curves" <<'PY' | tee "$out/curves.txt"
import json, sys
def losses(name): return [json.loads(l)["train_loss"] for l in open(f"{sys.argv[1]}/{name}/metrics.jsonl")]
def smoothed(x, w=20): return [sum(x[max(0, i - w + 1):i + 1]) / len(x[max(0, i - w + 1):i + 1]) for i in range(len(x))]
def difference(a, b):  # as MixedPrecisionTests: smoothed curves over the last 50 steps, and the final loss
    sa, sb = smoothed(a), smoothed(b)
    return sum(abs(sa[i] - sb[i]) for i in range(len(a) - 50, len(a))) / 50, abs(a[-1] - b[-1])
ref, other, bf16 = losses("fp32-1337"), losses("fp32-1338"), losses("bf16-1337")
noise, precision = difference(ref, other), difference(ref, bf16)
print(f"final loss: fp32 {ref[-1]:.4f}, fp32 other seed {other[-1]:.4f}, bf16 {bf16[-1]:.4f}")
print(f"seed to seed (fp32): curves {noise[0]:.3g}, final {noise[1]:.3g}; bf16 to fp32: curves {precision[0]:.3g}, final {precision[1]:.3g}")
print(f"ratios to the seed spread: curves {precision[0] / noise[0]:.3g}, final {precision[1] / noise[1]:.3g} (pass: both under 0.1)")
sys.exit(0 if precision[0] < noise[0] / 10 and precision[1] < noise[1] / 10 and ref[-1] < ref[0] - 1 else 1)
PY

step "resume on the GPU: from the step-100 checkpoint to step 200, against the uninterrupted run"
"$oecrun" train "${gpu[@]}" train.steps=200 train.log_every=1 job.checkpoint_every=100 run.out_dir="$out/resume/whole" > "$out/resume/whole.log" 2>&1 \
    || { tail -5 "$out/resume/whole.log" >&2; exit 1; }
mkdir -p "$out/resume/resumed/checkpoints"
cp -r "$out/resume/whole/checkpoints/step_00000100" "$out/resume/resumed/checkpoints/"
"$oecrun" train "${gpu[@]}" train.steps=200 train.log_every=1 job.checkpoint_every=100 job.resume=true run.out_dir="$out/resume/resumed" \
    > "$out/resume/resumed.log" 2>&1 || { tail -5 "$out/resume/resumed.log" >&2; exit 1; }
python3 - "$out/resume" <<'PY' | tee "$out/resume.txt"
import json, sys
def run(name): return {m["step"]: m["train_loss"] for m in map(json.loads, open(f"{sys.argv[1]}/{name}/metrics.jsonl"))}
whole, resumed = run("whole"), run("resumed")
worst = max(abs(whole[s] - resumed[s]) for s in range(101, 201))
print(f"steps 101-200: largest train-loss difference {worst:.3g} (pass: under 1e-3; GPU kernels need not repeat bitwise)")
sys.exit(0 if worst < 1e-3 else 1)
PY

step "GPU benchmark, bf16: PyTorch eager and torch.compile, then oecrun (none, mu_centering)"
"$oecrun" bench-gpu --precision bf16 --modes eager,compile | tee "$out/bench-gpu-bf16.md"
step "GPU benchmark, fp32 (TF32 matmuls): PyTorch eager, then oecrun"
"$oecrun" bench-gpu --precision fp32 --modes eager | tee "$out/bench-gpu-fp32.md"
step "done: every check passed; results in $out"
