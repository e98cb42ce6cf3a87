#!/usr/bin/env bash
# Checks, for real, that FRR routes in dvnet's two kinds of routers, with the commands
# README.md documents (run as root; cleans up after itself, also on failure):
#
#   images/check-frr.sh docker   two dvnet/router containers (NET_ADMIN, NET_RAW, SYS_ADMIN,
#                                --network none) joined by a veth pair, FRR started with
#                                dvnet-frr inside each
#   images/check-frr.sh netns    three plain network namespaces in a chain, one instance of
#                                the host's FRR (zebra, staticd, ospfd) in each, side by side
#   images/check-frr.sh [all]    both
#
# Each runs OSPF (hello 1 s, dead 3 s, area 0) and passes when every router reaches Full with
# its neighbours and has an OSPF route to every other router's LAN in its kernel table.
set -euo pipefail

tag=dvchk$$ # prefix of everything this run creates
fail() { echo "check-frr: FAIL: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "run as root"

# The OSPF part of a router's frr.conf. The throttle timers make a fresh adjacency's routes
# appear in about a second instead of ~10 s (the traditional profile waits 5 s between
# router-LSA updates).
ospf_conf() { # HOSTNAME ROUTER-ID IFACE...
  local name=$1 rid=$2 i
  shift 2
  echo "frr defaults traditional"
  echo "hostname $name"
  for i in "$@"; do
    printf 'interface %s\n ip ospf hello-interval 1\n ip ospf dead-interval 3\n' "$i"
    printf ' ip ospf network point-to-point\nexit\n'
  done
  printf 'router ospf\n ospf router-id %s\n' "$rid"
  printf ' timers throttle spf 0 50 1000\n timers throttle lsa all 0\n timers lsa min-arrival 0\n'
  printf ' network 10.0.0.0/8 area 0\nexit\n'
}

wait_routes() { # WANT CMD...: until CMD prints WANT lines with "proto ospf" (10 s)
  local want=$1
  shift
  for _ in $(seq 1 100); do
    [ "$("$@" | grep -c 'proto ospf')" -ge "$want" ] && return 0
    sleep 0.1
  done
  return 1
}

# --- two containers -------------------------------------------------------------------
check_docker() {
  local t0=$SECONDS n p1 p2
  docker image inspect dvnet/router >/dev/null 2>&1 || fail "no dvnet/router image (images/build.sh router)"
  # shellcheck disable=SC2064
  trap "docker rm -f $tag-r1 $tag-r2 >/dev/null 2>&1 || true" EXIT
  for n in 1 2; do
    docker run -d --network none --cap-add NET_ADMIN --cap-add NET_RAW --cap-add SYS_ADMIN \
      --name "$tag-r$n" --hostname "r$n" dvnet/router >/dev/null
  done
  p1=$(docker inspect -f '{{.State.Pid}}' "$tag-r1")
  p2=$(docker inspect -f '{{.State.Pid}}' "$tag-r2")
  ip link add eth0 netns "/proc/$p1/ns/net" type veth peer name eth0 netns "/proc/$p2/ns/net"
  for n in 1 2; do
    docker exec "$tag-r$n" sh -c "ip addr add 10.1.0.$n/30 dev eth0 && ip link set eth0 up &&
      ip link add lan0 type veth peer name lan1 && ip link set lan0 up && ip link set lan1 up &&
      ip addr add 10.1.$n.1/24 dev lan0"
    ospf_conf "r$n" "10.1.0.$n" eth0 | docker exec -i "$tag-r$n" sh -c 'cat >/etc/frr/frr.conf'
    docker exec "$tag-r$n" dvnet-frr start ospfd
  done
  for n in 1 2; do
    wait_routes 1 docker exec "$tag-r$n" ip route ||
      fail "docker: r$n has no OSPF route: $(docker exec "$tag-r$n" vtysh -c 'show ip ospf neighbor')"
    docker exec "$tag-r$n" vtysh -c 'show ip ospf neighbor' | grep -q Full || fail "docker: r$n not Full"
  done
  echo "== docker: r1"
  docker exec "$tag-r1" sh -c 'vtysh -c "show ip ospf neighbor"; ip route'
  docker rm -f "$tag-r1" "$tag-r2" >/dev/null
  trap - EXIT
  echo "check-frr: docker OK ($((SECONDS - t0)) s)"
}

# --- three namespaces, the host's FRR ---------------------------------------------------
# Per router: a network namespace, a UTS namespace (the hostname FRR shows), a pathspace
# (-N) that puts its sockets, pid files and state under /var/run/frr/PATHSPACE, and a
# directory with its frr.conf, vtysh.conf and logs.
# ospfd 8.4 keeps graceful-restart state in /var/run/frr/ospfd-gr.json whatever -N says
# (README.md): removed again if this run created it.
gr_state=/var/run/frr/ospfd-gr.json
gr_state_was_there=0
[ -e "$gr_state" ] && gr_state_was_there=1

ns_cleanup() {
  local n ps
  for n in a b c; do
    ps="$tag-$n"
    for f in /var/run/frr/"$ps"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
  done
  sleep 0.3
  for n in a b c; do
    rm -rf "/var/run/frr/$tag-$n"
    mountpoint -q "/tmp/$tag/$n/uts" && umount "/tmp/$tag/$n/uts"
    ip netns del "$tag-$n" 2>/dev/null || true
  done
  rm -rf "/tmp/$tag"
  [ "$gr_state_was_there" = 1 ] || rm -f "$gr_state"
}

frr_start_ns() { # NODE NETNS DIR PATHSPACE DAEMON...: the documented netns recipe
  local node=$1 netns=$2 dir=$3 ps=$4 run d
  shift 4
  run=/var/run/frr/$ps
  install -d -o frr -g frr -m 0755 "$run"
  [ -e "$dir/uts" ] || { touch "$dir/uts"; unshare --uts="$dir/uts" hostname "$node"; }
  for d in zebra staticd "$@"; do
    extra=()
    [ "$d" = zebra ] && extra=(-s 90000000)
    nsenter --net="/run/netns/$netns" --uts="$dir/uts" \
      "/usr/lib/frr/$d" -d -F traditional -N "$ps" -P 0 -f /dev/null \
      --log "file:$dir/$d.log" --log-level informational "${extra[@]}" 2>>"$dir/$d.log"
    for _ in $(seq 1 100); do [ -S "$run/$d.vty" ] && break; sleep 0.05; done
    [ -S "$run/$d.vty" ] || fail "netns: $d of $node did not start (see $dir/$d.log)"
  done
  nsenter --net="/run/netns/$netns" --uts="$dir/uts" \
    vtysh --vty_socket "$run" --config_dir "$dir" -b >/dev/null
}

check_netns() {
  local t0=$SECONDS n i dir ifs
  [ -x /usr/lib/frr/zebra ] || fail "FRR is not installed on the host (./setup.sh installs it)"
  trap ns_cleanup EXIT
  for n in a b c; do ip netns add "$tag-$n"; ip -n "$tag-$n" link set lo up; done
  ip link add ab netns "$tag-a" type veth peer name ba netns "$tag-b"
  ip link add bc netns "$tag-b" type veth peer name cb netns "$tag-c"
  ip -n "$tag-a" addr add 10.2.12.1/30 dev ab
  ip -n "$tag-b" addr add 10.2.12.2/30 dev ba
  ip -n "$tag-b" addr add 10.2.23.1/30 dev bc
  ip -n "$tag-c" addr add 10.2.23.2/30 dev cb
  i=0
  for n in a b c; do
    i=$((i + 1))
    ip -n "$tag-$n" link add lan0 type veth peer name lan1
    ip -n "$tag-$n" addr add "10.2.$i.1/24" dev lan0
    for l in $(ip -n "$tag-$n" -o link | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }'); do
      ip -n "$tag-$n" link set "$l" up
    done
    dir=/tmp/$tag/$n
    install -d -o frr -g frr -m 0750 "$dir"
    ifs=$(ip -n "$tag-$n" -o -4 addr | awk '$2 != "lo" && $2 != "lan0" { print $2 }')
    # shellcheck disable=SC2086 # a list of interfaces
    ospf_conf "$n" "10.2.0.$i" $ifs >"$dir/frr.conf"
    echo "service integrated-vtysh-config" >"$dir/vtysh.conf"
    chown frr:frr "$dir/frr.conf" "$dir/vtysh.conf"
    chmod 0640 "$dir/frr.conf" "$dir/vtysh.conf"
  done
  for n in a b c; do frr_start_ns "$n" "$tag-$n" "/tmp/$tag/$n" "$tag-$n" ospfd; done
  # Every router reaches the other two LANs (and the transit link it is not on).
  for n in a b c; do
    local want=3
    [ "$n" = b ] && want=2
    wait_routes "$want" ip -n "$tag-$n" route ||
      fail "netns: $n lacks OSPF routes: $(ip -n "$tag-$n" route)"
  done
  echo "== netns: b (two neighbours), instances side by side:"
  nsenter --net="/run/netns/$tag-b" --uts="/tmp/$tag/b/uts" \
    vtysh --vty_socket "/var/run/frr/$tag-b" -c 'show ip ospf neighbor'
  ip -n "$tag-b" route
  pgrep -a -f "/usr/lib/frr/(zebra|ospfd) .*-N $tag-" | sed 's/ --log.*//'
  ns_cleanup
  trap - EXIT
  echo "check-frr: netns OK ($((SECONDS - t0)) s)"
}

case "${1:-all}" in
  docker) check_docker ;;
  netns) check_netns ;;
  all) check_docker; check_netns ;;
  *) echo "usage: check-frr.sh [docker|netns|all]" >&2; exit 2 ;;
esac
