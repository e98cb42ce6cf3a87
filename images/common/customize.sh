#!/bin/sh
# Final touches of a dvnet node image, run as root inside the image's root filesystem: in a
# chroot by images/build.sh (offline path), in a RUN step by the Dockerfiles. Expects this
# directory's files (and, for the router, router/dvnet-frr) in /tmp/dvnet.
#   customize.sh host|router
set -eu
image=$1
src=/tmp/dvnet

# Later `apt-get install`s inside a node stay small too: no docs, man pages or translations,
# no recommended packages.
mkdir -p /etc/dpkg/dpkg.cfg.d /etc/apt/apt.conf.d
cat >/etc/dpkg/dpkg.cfg.d/dvnet-nodoc <<'END'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
END
echo 'APT::Install-Recommends "false";' >/etc/apt/apt.conf.d/dvnet-norecommends

# No login at all: root's password stays locked ('*'), and there is no sshd. `docker exec`
# (or `dvnet exec`) is the way in.
sed -i 's/^root:[^:]*:/root:*:/' /etc/shadow

install -m 0755 "$src/dvnet-init" /usr/local/sbin/dvnet-init

if [ "$image" = router ]; then
  install -m 0755 "$src/dvnet-frr" /usr/local/sbin/dvnet-frr
  # Sockets and pid files (/run/frr) and logs belong to the frr user the daemons drop to.
  install -d -o frr -g frr -m 0755 /run/frr /var/log/frr
  install -d -o frr -g frr -m 0750 /etc/frr
  # An empty integrated configuration, for dvnet (or the user) to replace. Integrated means
  # one file for every daemon, applied with `vtysh -b` (vtysh.conf:
  # service integrated-vtysh-config, as Debian ships it).
  printf 'frr defaults traditional\n!\n' >/etc/frr/frr.conf
  chown frr:frr /etc/frr/frr.conf
  chmod 0640 /etc/frr/frr.conf
fi
