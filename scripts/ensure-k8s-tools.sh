#!/usr/bin/env bash
# Makes the Kubernetes manifest tools of `make lint` available, pinned, in .tools/, and prints
# where they are on stdout, one `name=path` a line (messages go to stderr):
#
#   kustomize=<.tools/kustomize-VERSION/bin/kustomize>     renders deploy/k8s/overlays/*
#   kubeconform=<.tools/kubeconform-VERSION/bin/kubeconform> validates what they render
#   keda_crds=<.tools/keda-crds-VERSION>                   KEDA's CustomResourceDefinitions
#
# The two programs are built from their Go modules (`go install`, through the Go module proxy);
# KEDA's CRDs are copied out of the KEDA Go module (config/crd/bases), which is where the
# project gets the schemas of ScaledObject and TriggerAuthentication (scripts/check_deploy.py
# turns them into JSON schemas for kubeconform). Kubernetes' own schemas come from the PyPI
# package kubernetes-validate (pinned in pyproject.toml). Nothing is fetched from anywhere else.
# Each is installed once; a version change installs beside the old one.
#
# Usage: scripts/ensure-k8s-tools.sh   (needs Go 1.22 or newer on PATH, or at /usr/local/go)
set -euo pipefail

KUSTOMIZE_VERSION=v5.7.1
KUBECONFORM_VERSION=v0.7.0
KEDA_VERSION=v2.17.2

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="$root/.tools"

say() { printf 'ensure-k8s-tools: %s\n' "$*" >&2; }

# shellcheck source=lib/go-install.sh
source "$root/scripts/lib/go-install.sh"

go_install kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION"
go_install kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION"

crds="$tools/keda-crds-$KEDA_VERSION"
if [ ! -f "$crds/keda.sh_scaledobjects.yaml" ]; then
  need_go "KEDA's CRDs"
  say "copying KEDA $KEDA_VERSION's CRDs (go mod download github.com/kedacore/keda/v2@$KEDA_VERSION)"
  module_dir=$(GOFLAGS=-modcacherw GOTOOLCHAIN=local \
    "$go_bin" mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
  mkdir -p "$crds.partial"
  cp "$module_dir"/config/crd/bases/keda.sh_*.yaml "$crds.partial/"
  rm -rf "$crds"
  mv "$crds.partial" "$crds"
fi
printf 'keda_crds=%s\n' "$crds"
