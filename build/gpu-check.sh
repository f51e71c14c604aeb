#!/usr/bin/env bash
# The checks that need a GPU, in one run on a machine with an NVIDIA GPU, PyTorch (torch with CUDA, NCCL from its
# wheels) and no .NET: the oecrun bundle from build/publish-bundle.sh is unpacked and run against PyTorch's libtorch.
#
#   here:        build/publish-bundle.sh none                      (dist/oecrun-linux-x64.tar.xz, about 42 MB)
#   GPU machine: build/gpu-check.sh [OUT]                           (OUT defaults to $OUT, else ./gpu-check)
#
# Sections, most wanted first, each under its own time limit; a failed one is reported and the next still runs:
#   kernels      kernels-compile.txt: `oecrun kernels --compile` for the GPU's architecture (registers, spills);
#                kernels.txt: `oecrun kernels --check`, every fused CUDA kernel (NVRTC) against the TorchSharp ops it
#                replaces, fp32 and bf16, forward and backward, at odd sizes and the 16M and 162M shapes (the sections
#                after it train with train.fused_kernels = auto: with the kernels wherever NVRTC is found; bench-gpu
#                adds a row with them off; where this section fails they run with the kernels off)
#   bench_bf16   bench-gpu-bf16.md: oecrun against PyTorch eager (bf16 autocast) and torch.compile at the 162M shape
#                (bench-gpu's defaults), and oecrun's step profile (docs/benchmarks.md)
#   bench_16m    bench-gpu-16m.md: the same at the paper's 16M shape (BENCH_16M), with the profile
#   curves       curves.txt: fp32 and bf16 on cuda over 200 steps of the default model, judged as MixedPrecisionTests
#                judges them on the CPU (bf16 within a tenth of the fp32 seed-to-seed spread)
#   resume       resume.txt: a run resumed from its step-100 checkpoint against the uninterrupted one (and against
#                how far a second uninterrupted run differs)
#   bench_fp32   bench-gpu-fp32.md: the same benchmark in fp32 with TF32 matmuls, against PyTorch eager
#   tcp_cuda     (only when SECTIONS names it) tcp-cuda.txt: 2 ranks on the one GPU with job.backend=tcp (the ring
#                stages CUDA tensors through host memory) against 1 rank, same global batch: the loss curves equal
#                within float rounding (judged against how far two 1-rank runs part); also 2 ranks with train.zero=3
#                (each block's weights gathered from both ranks for its forward and its recomputation)
#   largest      (only when SECTIONS names it) largest.txt: the largest preset on one GPU (gpt3-2.7B), at the plan's largest
#                micro-batch without and with activation checkpointing: tokens/s and the device memory peak against the plan
# SECTIONS (below) picks sections and their limits. Also nvidia-smi.txt, torch-info.txt and revision.txt (the commit the bundle was built from). Exit code: 0 when every section passed, else 1 (sections.txt says which).
#
# A dry run of the script itself on a CPU machine, before spending GPU time:
#   OECRUN=src/OecRun/bin/Release/net10.0/oecrun DEVICE=cpu BENCH_16M= BENCH_ARGS="--device cpu --d-model 64 --n-layer 2 --n-head 4 \
#     --vocab 512 --seq 64 --batch 4 --steps 3 --warmup 1 --python /usr/bin/python3" build/gpu-check.sh /tmp/gpu-check
# (OECRUN: an oecrun to use instead of the bundle; DEVICE: train.device; BENCH_ARGS: more bench-gpu options;
# BENCH_16M: the 16M section's shape options, empty for BENCH_ARGS's shape.) On a CPU the kernels section exits 2 (no GPU) and
# the bf16 benches fail where the PyTorch has no torch.compile (Debian's 1.13); the others pass.
set -uo pipefail

# Every SECTIONS entry is name:limit with a section's name (as in the header) and whole seconds, checked before any runs:
# a misspelt one would otherwise fail only after the machine's minutes were spent.
known="kernels bench_bf16 bench_16m curves resume bench_fp32 tcp_cuda largest"
for section in ${SECTIONS:-}; do
    name=${section%%:*} limit=${section#*:}
    if [[ " $known " != *" $name "* || "$section" != *:* || ! "$limit" =~ ^[0-9]+$ ]]; then
        echo "SECTIONS entry '$section': expected name:seconds with a name among: $known" >&2
        exit 2
    fi
done

cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-${OUT:-gpu-check}}")
mkdir -p "$out/curves" "$out/resume" "$out/tcp-cuda"
device=${DEVICE:-cuda}
export BENCH_ARGS=${BENCH_ARGS:-}
export BENCH_16M=${BENCH_16M---d-model 224 --n-layer 6 --n-head 4 --vocab 50304 --seq 2048 --batch 16}
if [ -n "${OECRUN:-}" ]; then
    oecrun=$(realpath "$OECRUN")
else
    bundle=dist/oecrun-linux-x64.tar.xz
    [ -f "$bundle" ] || { echo "gpu-check: $bundle not found: run build/publish-bundle.sh none first and carry it" >&2; exit 2; }
    work=$(mktemp -d)
    tar -C "$work" -xJf "$bundle" || exit 2
    oecrun="$work/oecrun-linux-x64/oecrun"
    echo "bundle built from $(cat "$work/oecrun-linux-x64/REVISION" 2>/dev/null || echo 'an unknown revision')" | tee "$out/revision.txt"
    torchlib=$(python3 -c "import torch,os;print(os.path.dirname(torch.__file__)+'/lib')") || { echo "gpu-check: python3 has no torch" >&2; exit 2; }
    ncclib=$(python3 -c "import nvidia.nccl,os;print(list(nvidia.nccl.__path__)[0]+'/lib')" 2>/dev/null || true)
    # NVRTC for the fused kernels: the one PyTorch's wheels install (nvidia/cu13/lib or nvidia/cuda_nvrtc/lib).
    nvrtc=$(python3 -c "import nvidia,glob,os;print(next(iter(sorted(f for p in nvidia.__path__ for f in glob.glob(p+'/*/lib/libnvrtc.so.1[0-9]'))),''))" 2>/dev/null || true)
    # (its directory on the loader's path too: NVRTC loads libnvrtc-builtins from beside it)
    [ -n "$nvrtc" ] && export OEC_NVRTC_LIBRARY="$nvrtc" LD_LIBRARY_PATH="$(dirname "$nvrtc")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export OEC_LIBTORCH=python OEC_LIBTORCH_ANY_VERSION=1 DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1
    export LD_LIBRARY_PATH="$torchlib${ncclib:+:$ncclib}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

nvidia-smi > "$out/nvidia-smi.txt" 2>&1
"$oecrun" torch-info 2>&1 | tee "$out/torch-info.txt"
if [ "$device" = cuda ]; then
    grep -q "^cuda: available" "$out/torch-info.txt" || { echo "gpu-check: oecrun sees no CUDA device" >&2; exit 1; }
    # One process on cuda:0: a local job of world size 1 (NCCL on one GPU runs only at world size 1).
    gpu=(train.device=cuda job.world_size=1 job.backend=nccl)
else
    gpu=(train.device="$device" job.world_size=1)
fi

# train NAME SETTINGS...: one local job into $out/NAME, its output in $out/NAME.log; on failure its last lines.
train() {
    local name=$1; shift
    "$oecrun" train "${gpu[@]}" "$@" run.out_dir="$out/$name" > "$out/$name.log" 2>&1 || { tail -5 "$out/$name.log" >&2; return 1; }
}

# shellcheck disable=SC2086 # BENCH_ARGS is a list of options
bench_bf16() { "$oecrun" bench-gpu --precision bf16 --modes eager,compile --profile $BENCH_ARGS 2>&1 | tee "$out/bench-gpu-bf16.md"; }
# shellcheck disable=SC2086
bench_16m() { "$oecrun" bench-gpu --precision bf16 --modes eager,compile --profile $BENCH_16M $BENCH_ARGS 2>&1 | tee "$out/bench-gpu-16m.md"; }
# shellcheck disable=SC2086
bench_fp32() { "$oecrun" bench-gpu --precision fp32 --modes eager $BENCH_ARGS 2>&1 | tee "$out/bench-gpu-fp32.md"; }
# First every kernel compiled for the GPU's architecture with ptxas' registers and spills (kernels-compile.txt: the
# tests check the same with NVRTC 11.8, here it is the wheels' NVRTC), which also fills the cache the check reads.
kernels() {
    local cap
    cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d '. ')
    [ -n "$cap" ] && "$oecrun" kernels --compile "$cap" > "$out/kernels-compile.txt" 2>&1
    "$oecrun" kernels --check 2>&1 | tee "$out/kernels.txt"
}

curves() {
    for run in fp32:1337 fp32:1338 bf16:1337; do
        train "curves/${run/:/-}" train.steps=200 train.log_every=1 train.precision="${run%:*}" train.seed="${run#*:}" job.checkpoint_every=0 || return 1
    done
    python3 - "$out/curves" "$device" <<'PY' | tee "$out/curves.txt"
import json, sys
def losses(name): return [json.loads(l)["train_loss"] for l in open(f"{sys.argv[1]}/{name}/metrics.jsonl")]
def smoothed(x, w=20): return [sum(x[max(0, i - w + 1):i + 1]) / len(x[max(0, i - w + 1):i + 1]) for i in range(len(x))]
def difference(a, b):  # as MixedPrecisionTests: smoothed curves over the last 50 steps, and the final loss
    sa, sb = smoothed(a), smoothed(b)
    return sum(abs(sa[i] - sb[i]) for i in range(len(a) - 50, len(a))) / 50, abs(a[-1] - b[-1])
ref, other, bf16 = losses("fp32-1337"), losses("fp32-1338"), losses("bf16-1337")
noise, precision = difference(ref, other), difference(ref, bf16)
if sys.argv[2] == "cuda":
    print("fp32 here is fp32 weights with TF32 matmuls (train.device = cuda turns TF32 on), bf16 is bf16 matmuls on fp32 master weights")
print(f"final loss: fp32 {ref[-1]:.4f}, fp32 other seed {other[-1]:.4f}, bf16 {bf16[-1]:.4f}")
print(f"seed to seed (fp32): curves {noise[0]:.3g}, final {noise[1]:.3g}; bf16 to fp32: curves {precision[0]:.3g}, final {precision[1]:.3g}")
print(f"ratios to the seed spread: curves {precision[0] / noise[0]:.3g}, final {precision[1] / noise[1]:.3g} (pass: both under 0.1)")
sys.exit(0 if precision[0] < noise[0] / 10 and precision[1] < noise[1] / 10 and ref[-1] < ref[0] - 1 else 1)
PY
}

resume() {
    train resume/whole train.steps=200 train.log_every=1 job.checkpoint_every=100 || return 1
    mkdir -p "$out/resume/resumed/checkpoints"
    cp -r "$out/resume/whole/checkpoints/step_00000100" "$out/resume/resumed/checkpoints/" || return 1
    train resume/resumed train.steps=200 train.log_every=1 job.checkpoint_every=100 job.resume=true || return 1
    train resume/again train.steps=200 train.log_every=1 job.checkpoint_every=0 || return 1 # how far two runs part anyway
    python3 - "$out/resume" <<'PY' | tee "$out/resume.txt"
import json, sys
def run(name): return {m["step"]: m["train_loss"] for m in map(json.loads, open(f"{sys.argv[1]}/{name}/metrics.jsonl"))}
whole, resumed, again = run("whole"), run("resumed"), run("again")
def worst(other): return max(abs(whole[s] - other[s]) for s in range(101, 201))
# GPU kernels need not repeat bitwise (atomics in backward), and 100 steps of Adam grow the difference: the resume
# passes under 1e-3 or under 3x what two uninterrupted runs differ by; a lost optimizer state or RNG is far beyond.
limit = max(1e-3, 3 * worst(again))
print(f"steps 101-200: largest train-loss difference resumed {worst(resumed):.3g}, two uninterrupted runs {worst(again):.3g} (pass: under {limit:.3g})")
sys.exit(0 if worst(resumed) < limit else 1)
PY
}

# 2 ranks sharing cuda:0 over the TCP ring against 1 rank, same train.batch_size (the global batch) and seed.
tcp_cuda() {
    local steps=(train.steps=100 train.log_every=1 job.checkpoint_every=0)
    train tcp-cuda/one "${steps[@]}" || return 1
    train tcp-cuda/again "${steps[@]}" || return 1 # how far two runs part anyway
    train tcp-cuda/two "${steps[@]}" job.world_size=2 job.backend=tcp || return 1
    train tcp-cuda/zero3 "${steps[@]}" job.world_size=2 job.backend=tcp train.zero=3 || return 1 # ZeRO-3's gathers on CUDA
    python3 - "$out/tcp-cuda" <<'PY' | tee "$out/tcp-cuda.txt"
import json, sys
def run(name): return {m["step"]: m["train_loss"] for m in map(json.loads, open(f"{sys.argv[1]}/{name}/metrics.jsonl"))}
one, again, two, zero3 = run("one"), run("again"), run("two"), run("zero3")
def worst(other): return max(abs(one[s] - other[s]) for s in one)
# Two ranks sum two half-batch gradients where one rank sums one batch: the same arithmetic up to float rounding,
# which Adam grows over the steps. Pass under 1e-3 or under 3x what two 1-rank runs differ by (GPU atomics); a
# wrong reduction, a stale device copy or data not split as the global batch is far beyond.
limit = max(1e-3, 3 * worst(again))
print(f"first step loss: 1 rank {one[min(one)]:.6f}, 2 ranks over tcp {two[min(two)]:.6f}, 2 ranks ZeRO-3 {zero3[min(zero3)]:.6f}; steps {min(one)}-{max(one)}")
print(f"largest train-loss difference: 2 ranks over tcp {worst(two):.3g}, 2 ranks ZeRO-3 {worst(zero3):.3g}, two 1-rank runs {worst(again):.3g} (pass: under {limit:.3g})")
sys.exit(0 if sorted(two) == sorted(one) == sorted(zero3) and max(worst(two), worst(zero3)) < limit else 1)
PY
}

# The largest preset one GPU trains (gpt3-2.7B fits an H100 or an H200 by the plan), without and with every block checkpointed,
# each at the largest micro-batch `oecrun plan` gives for LARGEST_MEMORY (default 85% of the GPU's memory, leaving the
# rest to the CUDA context and the allocator's fragmentation; 2 sequences on an 80 GB H100, 8 on an H200): tokens/s, and the device memory in use at its highest (nvidia-smi every 0.2 s)
# against the plan's total. Passes when both train and the measured peak is within 25% of the plan's total.
largest() {
    local base=(model.preset="${LARGEST_PRESET:-gpt3-2.7B}" data.vocab_size=50257 data.synthetic_tokens=2000000 train.sequence_length=2048
                train.precision=bf16 train.steps=5 train.warmup_steps=1 train.log_every=1 train.eval_every=0 job.checkpoint_every=0)
    mkdir -p "$out/largest"
    local total memory
    total=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -1)   # MiB
    memory=${LARGEST_MEMORY:-$([ -n "$total" ] && echo "$((total * 85 / 100))MiB" || echo 120GiB)}
    for ac in none all; do
        "$oecrun" plan "${base[@]}" "${gpu[@]}" --gpu-memory "$memory" --activation-checkpointing $ac > "$out/largest/plan-$ac.txt" || return 1
        local batch
        batch=$(sed -n 's/^largest micro-batch: \([0-9]*\) .*/\1/p' "$out/largest/plan-$ac.txt")
        [ "${batch:-0}" -ge 1 ] || { echo "largest: the plan fits no sequence ($ac)" >&2; return 1; }
        if command -v nvidia-smi > /dev/null; then
            (while :; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; sleep 0.2; done > "$out/largest/used-$ac.txt") &
            local poller=$!
        fi
        train "largest/$ac" "${base[@]}" train.batch_size="$batch" train.activation_checkpointing=$ac; local trained=$?
        [ -n "${poller:-}" ] && kill "$poller"
        [ $trained -eq 0 ] || return 1
    done
    python3 - "$out/largest" <<'PY' | tee "$out/largest.txt"
import json, os, re, sys
ok = True
for ac in ("none", "all"):
    d = sys.argv[1]
    plan = open(f"{d}/plan-{ac}.txt").read()
    batch = int(re.search(r"^largest micro-batch: (\d+) ", plan, re.M).group(1))
    planned = int(re.search(r"^\| total at \d+ sequence\(s\) per rank \| (\d+) ", plan, re.M).group(1))
    steps = [json.loads(l) for l in open(f"{d}/{ac}/metrics.jsonl")]
    rate = sorted(m["tokens_per_second"] for m in steps[1:])[len(steps[1:]) // 2]
    used = [int(x) for x in open(f"{d}/used-{ac}.txt").read().split()] if os.path.exists(f"{d}/used-{ac}.txt") else []
    peak = max(used) * 2**20 if used else None
    ratio = peak / planned if peak else None
    print(f"checkpointing {ac}: batch {batch} x 2048 tokens, {rate / 1000:.1f}k tokens/s (median of steps 2-5), "
          f"device memory peak {peak / 2**30 if peak else float('nan'):.1f} GiB, plan {planned / 2**30:.1f} GiB, measured / planned {ratio or float('nan'):.2f}")
    ok = ok and (ratio is None or 0.75 < ratio < 1.25)
sys.exit(0 if ok else 1)
PY
}

failed=0
: > "$out/sections.txt"
# 540 s in all: within a device call of 560 s; tcp_cuda and largest run when named (SECTIONS="tcp_cuda:90 largest:400"). SECTIONS="name:limit ..." runs those instead (e.g. SECTIONS="curves:100").
for section in ${SECTIONS:-kernels:60 bench_bf16:150 bench_16m:120 curves:80 resume:70 bench_fp32:60}; do
    name=${section%:*} limit=${section#*:}
    echo "== $name (at most $limit s)" >&2
    start=$SECONDS
    export -f train kernels bench_bf16 bench_16m bench_fp32 curves resume tcp_cuda largest
    export oecrun out device gpu_flat="${gpu[*]}"
    if timeout "$limit" bash -c "set -o pipefail; gpu=(\$gpu_flat); $name"; then result=passed; else result="FAILED (exit $?)"; failed=1; fi
    echo "$name: $result in $((SECONDS - start)) s" | tee -a "$out/sections.txt" >&2
    # Kernels that missed their check (or could not run) stay out of the sections after it, which then measure the rest.
    if [ "$name" = kernels ] && [ "$result" != passed ] && [ "$device" = cuda ]; then
        gpu+=(train.fused_kernels=off) BENCH_ARGS="$BENCH_ARGS --fused-kernels off"
        echo "kernels: the sections after it run with train.fused_kernels=off" | tee -a "$out/sections.txt" >&2
    fi
done
exit $failed
