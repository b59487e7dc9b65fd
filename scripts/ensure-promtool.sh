#!/usr/bin/env bash
# Makes Prometheus' promtool available, pinned, in .tools/, and prints where it is on stdout as
# `promtool=<.tools/promtool-VERSION/bin/promtool>` (messages go to stderr). `make lint` runs
# `promtool check rules` and `promtool test rules` with it (scripts/check_observability.py).
#
# Built from the Prometheus Go module (`go install`, through the Go module proxy), as
# scripts/ensure-k8s-tools.sh builds kustomize and kubeconform. Prometheus 3.x tags its Go module
# v0.3MM.P for the release 3.MM.P: v0.316.0 is Prometheus 3.16.0. The build tag remove_all_sd
# leaves out the optional service discoveries (cloud providers' SDKs) that promtool's rule
# checks and rule tests never use, which makes the build much smaller; the release is written
# into the binary so `promtool --version` names it. Installed once; a version change installs
# beside the old one.
#
# Usage: scripts/ensure-promtool.sh   (needs Go 1.26.7 or newer on PATH, or at /usr/local/go)
set -euo pipefail

PROMETHEUS_MODULE_VERSION=v0.316.0
PROMETHEUS_RELEASE=3.16.0

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="$root/.tools"

say() { printf 'ensure-promtool: %s\n' "$*" >&2; }

# shellcheck source=lib/go-install.sh
source "$root/scripts/lib/go-install.sh"

go_install promtool github.com/prometheus/prometheus/cmd/promtool "$PROMETHEUS_MODULE_VERSION" \
  -tags remove_all_sd \
  -ldflags "-X github.com/prometheus/common/version.Version=$PROMETHEUS_RELEASE"
