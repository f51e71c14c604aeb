#!/usr/bin/env bash
# Installs the programs the tests drive for real: a Prometheus server (scrapes a job's coordinator; promtool checks
# the alert rules), headless Chromium (loads the coordinator's live page), a font (the text of `report`'s charts) and
# kubectl (renders the Kubernetes overlays offline with its built-in kustomize), NVRTC (compiles every CUDA kernel for
# sm_80 and sm_90 without a GPU: Debian's libnvrtc11.2, CUDA 11.8's, from the non-free component, which this adds when
# apt has no candidate), clang (runs the kernel sources on the host) and PyTorch for /usr/bin/python3 (the
# reference that the model's logits and gradients are compared against, and bench-gpu's twin at toy size on the CPU).
# Debian 12 packages (other distributions name some of them otherwise: chromium, kubernetes-client, libnvrtc11.2). Idempotent: does nothing when all are installed. Needs root or sudo. .ci/run calls
# it; the tests call it themselves when a program is missing and they run as root.
set -euo pipefail
need=()
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
# Debian's package of kubectl is kubernetes-client (1.20, whose kustomize the overlays are kept compatible with).
command -v kubectl >/dev/null 2>&1 || need+=(kubernetes-client)
command -v clang-16 >/dev/null 2>&1 || command -v clang-15 >/dev/null 2>&1 || command -v clang >/dev/null 2>&1 || need+=(clang)
/sbin/ldconfig -p | grep 'libnvrtc\.so' >/dev/null || need+=(libnvrtc11.2 libnvrtc-builtins11.8)
# Debian's PyTorch (1.13, CPU) for Debian's python, not for whichever python3 comes first on PATH.
/usr/bin/python3 -c "import torch" >/dev/null 2>&1 || need+=(python3-torch)
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
# Prometheus' package would start a system service; tests start their own server on loopback instead.
# An existing policy-rc.d (container images ship one) is kept aside and put back.
$sudo sh -c '[ -e /usr/sbin/policy-rc.d ] && mv /usr/sbin/policy-rc.d /usr/sbin/policy-rc.d.oec-saved; printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
trap '$sudo sh -c "rm -f /usr/sbin/policy-rc.d; [ -e /usr/sbin/policy-rc.d.oec-saved ] && mv /usr/sbin/policy-rc.d.oec-saved /usr/sbin/policy-rc.d; true"' EXIT
# libnvrtc11.2 is in Debian's non-free component: add it (a sources file of its own, the release's mirror) where apt
# knows no candidate.
if [[ " ${need[*]} " == *" libnvrtc11.2 "* ]] && ! apt-cache policy libnvrtc11.2 2>/dev/null | grep 'Candidate: [0-9]' >/dev/null; then
    . /etc/os-release
    if [ "${ID:-}" = debian ]; then
        mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
        printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "${mirror:-http://deb.debian.org/debian}" "${VERSION_CODENAME}" | $sudo tee /etc/apt/sources.list.d/debian-non-free.sources >/dev/null
    fi
fi
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
command -v prometheus >/dev/null && command -v chromium >/dev/null && { command -v clang-16 || command -v clang-15 || command -v clang; } >/dev/null && command -v chromium >/dev/null && command -v kubectl >/dev/null && /usr/bin/python3 -c "import torch" && /sbin/ldconfig -p | grep 'libnvrtc\.so' >/dev/null
