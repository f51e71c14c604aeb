#!/usr/bin/env bash
# Renders deploy/k8s/base again with the command line recorded in its kustomization.yaml: run it after changing the
# renderer (src/OecRun/Kubernetes), the dashboard or example-job.json. KubernetesTests fails while base/ is stale.
set -euo pipefail
cd "$(dirname "$0")/../.."
args=$(sed -n 's/^# oecrun k8s //p' deploy/k8s/base/kustomization.yaml)
[ -n "$args" ] || { echo "deploy/k8s/base/kustomization.yaml records no command line" >&2; exit 1; }
# shellcheck disable=SC2086 # the recorded arguments hold no spaces (the test checks that)
dotnet run -c Release --project src/OecRun -- k8s $args --out deploy/k8s/base
