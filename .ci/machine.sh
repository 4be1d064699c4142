#!/usr/bin/env bash
# Machine-level set-up for the test suite: Debian packages, then the container engine (.ci/docker.sh).
# Idempotent: fast when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v dot >/dev/null || need+=(graphviz)
command -v chromium >/dev/null || need+=(chromium)
fc-list 2>/dev/null | grep -qi dejavu || need+=(fonts-dejavu-core)
if [ ${#need[@]} -gt 0 ]; then
  echo "machine: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ -f .ci/docker.sh ]; then
  bash .ci/docker.sh
fi
