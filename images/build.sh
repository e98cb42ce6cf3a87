#!/usr/bin/env bash
# Builds dvnet's node images without a container registry: debootstrap a minimal Debian 12
# root filesystem, add the image's packages, customize and trim it, `docker import` it.
# Machines with a registry can use the Dockerfiles instead (see README.md); both give the same
# packages, files, CMD and labels.
#
#   images/build.sh [--force] [host|router|all]     (default: all)
#
# Quick when nothing changed: each image carries the hash of its recipe (this script, its
# package lists, the files it copies in) in the label org.dvnet.recipe, and an image whose
# label matches is left alone. Caches, under $DVNET_IMAGE_CACHE (default
# /var/cache/dvnet-images):
#   debs/             every .deb downloaded (by debootstrap and by apt): a changed package
#                     list only downloads what is new
#   base-KEY.tar      debootstrap's result (minbase + host/packages, docs trimmed, apt's
#                     package lists kept): both images start from it, so only a change to
#                     host/packages (or to the bootstrap step) runs debootstrap again;
#                     anything else rebuilds in seconds. Delete it to pick up newer packages.
# Env: DVNET_DEBIAN_MIRROR (default: the host's own bookworm mirror, as apt sees it; with
# neither, the build stops and says so: no mirror is written into this script).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
suite=bookworm
cache=${DVNET_IMAGE_CACHE:-/var/cache/dvnet-images}

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
force=0
targets=()
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    host|router) targets+=("$arg") ;;
    all) targets+=(host router) ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build.sh: unknown argument $arg (want host, router, all or --force)" >&2; exit 2 ;;
  esac
done
[ "${#targets[@]}" -gt 0 ] || targets=(host router)

say() { printf 'images: %s\n' "$*"; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (debootstrap and chroot need it)"
docker version >/dev/null 2>&1 || die "no Docker daemon answers (./setup.sh --docker starts one)"

# Every image starts from one base root filesystem: Debian minbase plus host/packages. The
# router adds router/packages on top with apt (seconds), rather than a second debootstrap.
list() { sed 's/#.*//' "$@" | tr -s ' \t' '\n' | sed '/^$/d' | sort -u | paste -sd, -; }
base_packages=$(list "$here/host/packages")
extra_packages() { # NAME: what the image adds to the base, comma-separated
  case "$1" in
    host) echo "" ;;
    router) list "$here/router/packages" ;;
  esac
}
# Files copied into the image and run there by common/customize.sh.
image_files() {
  case "$1" in
    host) echo "$here/common/dvnet-init $here/common/customize.sh" ;;
    router) echo "$here/common/dvnet-init $here/common/customize.sh $here/router/dvnet-frr" ;;
  esac
}

# The host's own mirror for a suite, from apt's configuration (whatever its format).
host_mirror() { # SUITE DEFAULT
  local m
  # shellcheck disable=SC2016 # apt's own $(FIELD) syntax
  m=$(apt-get indextargets --format '$(SITE) $(RELEASE) $(COMPONENT) $(TARGET_OF)' 2>/dev/null |
      awk -v s="$1" '$2 == s && $3 == "main" && $4 == "deb" { print $1; exit }')
  echo "${m:-$2}"
}
mirror() {
  local m=${DVNET_DEBIAN_MIRROR:-$(host_mirror "$suite" "")}
  [ -n "$m" ] || die "no Debian mirror: this host's apt has no $suite source; set DVNET_DEBIAN_MIRROR to a $suite mirror (the URL of a Debian archive)"
  echo "$m"
}
# The security archive, when the host's apt has one (else nodes get no security line).
security_mirror() { host_mirror "$suite-security" ""; }

# The base keeps the package lists debootstrap leaves in it: the router's apt step uses them.
# This function's text (and trim_docs') is part of the base's cache key.
bootstrap() { # ROOTFS
  mkdir -p "$cache/debs" "$1/etc/dpkg/dpkg.cfg.d"
  # No fsync per file: a failed build is thrown away anyway. Removed again by trim.
  echo force-unsafe-io >"$1/etc/dpkg/dpkg.cfg.d/dvnet-unsafe-io"
  debootstrap --variant=minbase --include="$base_packages" --cache-dir="$cache/debs" \
    "$suite" "$1" "$(mirror)" >"$1.log" 2>&1 ||
    { tail -n 20 "$1.log" >&2; die "debootstrap failed (full log: $1.log)"; }
  rm -f "$1"/var/cache/apt/archives/*.deb # copies of what is in $cache/debs
  trim_docs "$1" # a smaller base is quicker to unpack, twice per build
}

add_packages() { # ROOTFS PACKAGES: apt inside the root filesystem, .debs shared with debootstrap
  local r=$1 log="$1.apt.log"
  mount --bind "$cache/debs" "$r/var/cache/apt/archives"
  # shellcheck disable=SC2046
  if ! DEBIAN_FRONTEND=noninteractive chroot "$r" apt-get install -y -q --no-install-recommends \
         $(tr , ' ' <<<"$2") >"$log" 2>&1; then
    # The base's package lists may be older than the mirror: refresh them once and retry.
    cp /etc/resolv.conf "$r/etc/resolv.conf" 2>/dev/null || true
    # shellcheck disable=SC2046
    { chroot "$r" apt-get update -q &&
      DEBIAN_FRONTEND=noninteractive chroot "$r" apt-get install -y -q --no-install-recommends \
        $(tr , ' ' <<<"$2"); } >>"$log" 2>&1 ||
      { umount "$r/var/cache/apt/archives"; tail -n 20 "$log" >&2; die "apt-get install $2 failed (full log: $log)"; }
  fi
  umount "$r/var/cache/apt/archives"
}

# Docs, man pages and translations: nothing a node needs (copyright files stay).
trim_docs() { # ROOTFS
  local r=$1
  find "$r/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$r"/usr/share/{man,info,groff,lintian,linda}/*
  find "$r/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
}

# The same, plus package lists, caches, logs and what Docker provides.
trim() { # ROOTFS
  local r=$1
  trim_docs "$r"
  rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin "$r"/var/cache/apt/archives/*.deb \
    "$r"/var/cache/debconf/*-old "$r"/var/lib/dpkg/*-old "$r"/tmp/* "$r"/var/tmp/* \
    "$r"/var/log/bootstrap.log "$r/etc/dpkg/dpkg.cfg.d/dvnet-unsafe-io"
  mkdir -p "$r/var/lib/apt/lists/partial"
  find "$r/var/log" -type f -exec truncate -s 0 {} +
  # Docker provides /dev, the hostname, /etc/hosts and /etc/resolv.conf.
  rm -rf "${r:?}"/dev/*
  rm -f "$r/etc/hostname"
  : >"$r/etc/resolv.conf"
}

unmount_below() { # DIR: whatever a failed step left mounted in it
  findmnt -rn -o TARGET | awk -v d="$1/" 'index($0, d) == 1' | sort -r |
    while read -r m; do umount -l "$m" || true; done
}

tar_opts=(--numeric-owner --xattrs --xattrs-include='*')

# The cached base for the current host/packages, built when missing. Prints its path.
base_tar() {
  local key tarball work
  key=$( { echo "$suite $base_packages"; declare -f bootstrap trim_docs; debootstrap --version; } |
         sha256sum | cut -c1-16)
  tarball="$cache/base-$key.tar"
  if [ ! -f "$tarball" ]; then
    local t0=$SECONDS
    mirror >/dev/null # here, not in a subshell: stops the build when there is none
    say "base: debootstrap $suite minbase with $base_packages (mirror $(mirror))" >&2
    work=$(mktemp -d "$cache/work-base.XXXXXX")
    # shellcheck disable=SC2064
    trap "unmount_below '$work'; rm -rf --one-file-system '$work'" EXIT
    bootstrap "$work/rootfs"
    unmount_below "$work"
    tar -C "$work/rootfs" "${tar_opts[@]}" -cf "$tarball.part" .
    rm -f "$cache"/base-*.tar # older recipes
    mv "$tarball.part" "$tarball"
    rm -rf --one-file-system "$work"
    trap - EXIT
    say "base: built in $((SECONDS - t0)) s" >&2
  fi
  echo "$tarball"
}

build() { # NAME
  local name=$1 tag="dvnet/$1:latest" extra pkgs recipe current work rootfs base old
  extra=$(extra_packages "$name")
  pkgs=$base_packages${extra:+,$extra}
  # shellcheck disable=SC2046
  recipe=$( { echo "$suite $pkgs"; cat "$0" $(image_files "$name"); } | sha256sum | cut -c1-16)
  current=$(docker image inspect -f '{{index .Config.Labels "org.dvnet.recipe"}}' "$tag" 2>/dev/null || true)
  if [ "$force" = 0 ] && [ "$current" = "$recipe" ]; then
    say "$tag is up to date (recipe $recipe)"
    return
  fi
  local t0=$SECONDS
  base=$(base_tar)
  work=$(mktemp -d "$cache/work-$name.XXXXXX")
  rootfs="$work/rootfs"
  # shellcheck disable=SC2064
  trap "unmount_below '$work'; rm -rf --one-file-system '$work'" EXIT
  mkdir "$rootfs"
  tar -C "$rootfs" "${tar_opts[@]}" -xpf "$base"
  if [ -n "$extra" ]; then
    say "$tag: adding $extra"
    add_packages "$rootfs" "$extra"
  fi

  mkdir -p "$rootfs/tmp/dvnet"
  # shellcheck disable=SC2046
  cp $(image_files "$name") "$rootfs/tmp/dvnet/"
  chroot "$rootfs" /bin/sh /tmp/dvnet/customize.sh "$name"
  # What debian:bookworm-slim points apt at, for `apt-get install` inside a running node.
  mirror >/dev/null # stops the build when there is none
  printf 'deb %s %s main\ndeb %s %s-updates main\n' "$(mirror)" "$suite" "$(mirror)" "$suite" \
    >"$rootfs/etc/apt/sources.list"
  if [ -n "$(security_mirror)" ]; then
    printf 'deb %s %s-security main\n' "$(security_mirror)" "$suite" >>"$rootfs/etc/apt/sources.list"
  fi
  trim "$rootfs"

  say "$tag: importing"
  old=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
  tar -C "$rootfs" "${tar_opts[@]}" -c . |
    docker import \
      --change 'CMD ["/usr/local/sbin/dvnet-init"]' \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change "LABEL org.dvnet.image=$name" \
      --change "LABEL org.dvnet.recipe=$recipe" \
      --change "LABEL org.dvnet.packages=$pkgs" \
      -m "dvnet/$name: debootstrap $suite minbase + $pkgs" \
      - "$tag" >/dev/null
  # The image this one replaces, unless a container still uses it.
  if [ -n "$old" ] && [ "$old" != "$(docker image inspect -f '{{.Id}}' "$tag")" ]; then
    docker image rm "$old" >/dev/null 2>&1 || true
  fi
  unmount_below "$work"
  rm -rf --one-file-system "$work"
  trap - EXIT
  say "$tag built in $((SECONDS - t0)) s: $(docker image inspect -f '{{.Size}}' "$tag" |
    awk '{ printf "%.0f MB", $1 / 1e6 }'), recipe $recipe"
}

mkdir -p "$cache"
# One build at a time per cache (two setups running at once would race on it).
exec 9>"$cache/.lock"
flock 9
# What a killed build left behind (nothing else builds now).
for w in "$cache"/work-*; do
  [ -d "$w" ] || continue
  unmount_below "$w"
  rm -rf --one-file-system "$w"
done
for t in "${targets[@]}"; do build "$t"; done
