#!/usr/bin/env bash
# Container engine for the test suite: Docker engine, docker-compose v1, debootstrap, a running dockerd,
# a single-node swarm. The images are built by `make images` (.ci/images.py), once the package is installed.
# Idempotent and fast when everything is there. Without root it changes nothing and says so: the
# container tests then skip with that reason.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "docker.sh: $*"; }

if [ "$(id -u)" != 0 ]; then
  say "not root: leaving the container engine as it is (container tests skip if none answers)"
  exit 0
fi

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  say "starting dockerd (log: /var/log/scanflow-dockerd.log)"
  setsid dockerd >/var/log/scanflow-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { say "dockerd did not answer within 60 s; see /var/log/scanflow-dockerd.log"; exit 1; }
fi

if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != active ]; then
  say "initialising a single-node swarm"
  docker swarm init --advertise-addr 127.0.0.1 >/dev/null
fi
