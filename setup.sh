#!/usr/bin/env bash
# Installs what dvnet needs on a fresh Debian 12 machine (run as root); quick when everything
# is already there. Idempotent. See README.md for why each piece.
#
#   ./setup.sh            toolchain, bpf-linker, networking tools, FRR (not started: dvnet
#                         runs one FRR instance per router namespace)
#   ./setup.sh --docker   the same, plus Docker (dockerd started without touching the host's
#                         firewall, forwarding or links) and dvnet's node images (images/)
#   ./setup.sh --bench    the same, plus the peers `cargo xtask bench` compares with (Mininet
#                         with Linux bridges; no Open vSwitch); combines with --docker
set -euo pipefail
cd "$(dirname "$0")"

with_docker=0
with_bench=0
for arg in "$@"; do
  case "$arg" in
    --docker) with_docker=1 ;;
    --bench) with_bench=1 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

say() { printf 'setup: %s\n' "$*"; }
[ "$(id -u)" = 0 ] || { echo "setup.sh: run as root (it installs packages)" >&2; exit 1; }

# --- Debian packages --------------------------------------------------------------------
# llvm-22-dev: bpf-linker links against LLVM 22 (same major as the pinned rustc).
# The rest: what nodes, tests and benchmarks run (ip, ping, traceroute, iperf3, tcpdump,
# tshark to read what `dvnet capture` writes, graphviz (`dot`) and chromium (headless) to check
# what `dvnet graph` draws and the page `dvnet ui` serves,
# iptables for the kernel datapath, nsenter from util-linux, frr for routers' routing
# daemons, openssh-server for the tests of labs driven over SSH on several machines, which
# start their own sshd inside namespaces). With --docker: Docker, unless a dockerd is already installed (docker-ce, say),
# and debootstrap, which builds the node images offline.
packages=(llvm-22-dev libzstd-dev build-essential pkg-config iproute2 iputils-ping traceroute iperf3
          tcpdump tshark graphviz chromium iptables nftables procps util-linux psmisc ethtool bpftool
          frr man-db openssh-server)
if [ "$with_docker" = 1 ]; then
  command -v dockerd >/dev/null || packages+=(docker.io)
  packages+=(debootstrap)
fi
# Mininet 2.3.0 runs with `switch=LinuxBridge` (brctl) and no controller: this kernel has no
# openvswitch module, so the recommended openvswitch-switch is left out (--no-install-recommends).
if [ "$with_bench" = 1 ]; then
  packages+=(mininet bridge-utils)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]}"
  # Installing frr or docker.io must not start them as system services: FRR would route in
  # the host's own namespace, and a default dockerd rewrites the host's firewall. Debian's
  # policy-rc.d hook (exit 101 = "do not start") holds them back, unless the machine has one.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# written by dvnet setup.sh for one apt-get run\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ "$own_policy" = 1 ]; then rm -f "$policy"; trap - EXIT; fi
  # On a systemd machine the units are still enabled for the next boot: not for FRR.
  if [[ " ${missing[*]} " == *" frr "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now frr.service >/dev/null 2>&1 || true
  fi
  # nor the SSH server: the tests run their own, in namespaces
  if [[ " ${missing[*]} " == *" openssh-server "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
  fi
fi

# --- Rust toolchain (pinned in rust-toolchain.toml) -------------------------------------
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
command -v rustup >/dev/null || { echo "setup.sh: rustup is missing; install it from https://rustup.rs" >&2; exit 1; }
toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
if ! rustup toolchain list | grep -q "^$toolchain"; then
  say "installing Rust $toolchain"
  rustup toolchain install "$toolchain" --profile minimal --component rust-src,clippy,rustfmt
fi

# --- bpf-linker, built against LLVM 22 ---------------------------------------------------
bpf_linker_version=0.13.0
if ! bpf-linker --version 2>/dev/null | grep -q "$bpf_linker_version"; then
  say "building bpf-linker $bpf_linker_version against LLVM 22 (about a minute)"
  LLVM_PREFIX=/usr/lib/llvm-22 cargo "+$toolchain" install --locked "bpf-linker@$bpf_linker_version" \
    --no-default-features --features llvm-22,llvm-link-static
fi

# --- Docker and the node images (only with --docker) -------------------------------------
if [ "$with_docker" = 1 ]; then
  if ! docker version >/dev/null 2>&1; then
    say "starting dockerd (no iptables, no ip-forward, no bridge: the host stays untouched)"
    mkdir -p /var/log
    # setsid + nohup: dockerd outlives this script and the terminal it ran in.
    setsid nohup dockerd --iptables=false --ip6tables=false --ip-forward=false --bridge=none \
      >/var/log/dvnet-dockerd.log 2>&1 </dev/null &
    for _ in $(seq 1 300); do docker version >/dev/null 2>&1 && break; sleep 0.1; done
    docker version >/dev/null 2>&1 || { echo "setup.sh: dockerd did not start; see /var/log/dvnet-dockerd.log" >&2; exit 1; }
  fi
  # dvnet/host and dvnet/router; a no-op (well under a second) when they are up to date.
  images/build.sh all
fi
say "ready"
