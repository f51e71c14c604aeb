#!/usr/bin/env bash
# Publishes oecrun as a self-contained linux-x64 bundle (no .NET needed where it runs) and packs it as a .tar.xz.
#
#   build/publish-bundle.sh [none|cpu]...     (default: none)
#
#   none  dist/oecrun-linux-x64: no libtorch inside; the target machine's PyTorch provides it at run time:
#         OEC_LIBTORCH=python dist/oecrun-linux-x64/oecrun torch-info   (or OEC_LIBTORCH=<site-packages>/torch/lib)
#   cpu   dist/oecrun-linux-x64-cpu: with the libtorch-cpu package's libraries (about 600 MB more), runs anywhere
#
# Nothing machine-specific goes in: no paths, no environment. Each variant restores and builds under its own
# dist/obj-<variant> (--artifacts-path), so the switch never flips the obj/ of ordinary builds and tests.
# The ELF fix for Debian 12 / Ubuntu 22.04 (build/TorchSharpElfFix.targets) runs after the publish; `always`
# because the bundle's target may lack GLIBCXX_3.4.32 even where this machine has it (a weak need is harmless).
set -euo pipefail
cd "$(dirname "$0")/.."

variants=("${@:-none}")
for variant in "${variants[@]}"; do
    case "$variant" in
        none) name=oecrun-linux-x64 ;;
        cpu) name=oecrun-linux-x64-cpu ;;
        *) echo "publish-bundle.sh: variant '$variant': expected none or cpu" >&2; exit 2 ;;
    esac
    out="dist/$name"
    rm -rf "$out" "$out.tar.xz"
    dotnet publish src/OecRun -c Release -r linux-x64 --self-contained -p:LibTorch="$variant" -p:TorchSharpElfFix=always \
        --artifacts-path "dist/obj-$variant" -o "$out"
    # the commit it was built from, so a run elsewhere says which code it ran ("-modified": with uncommitted changes)
    echo "$(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo -modified)" > "$out/REVISION"
    tar -C dist -cJf "$out.tar.xz" "$name"
    echo "$name: $(du -sh "$out" | cut -f1) in $out, $(du -h "$out.tar.xz" | cut -f1) as $out.tar.xz"
done
