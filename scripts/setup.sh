#!/usr/bin/env bash
# Installs what building and testing kthw needs on a fresh Debian 12 machine
# (run as root): the protobuf compiler for `make proto-check`; OpenSSH server,
# sudo and dbus for the integration tests; mmdebstrap, systemd-nspawn and
# apt-cacher-ng for lab nodes (the default provider and the e2e tests);
# rpm, rpmbuild, createrepo_c, dnf and zypper for the real package-manager
# tests of distro/pkg, apt-utils (apt-ftparchive) and gnupg for the signed
# test repositories; ansible for the benchmark comparison. Idempotent; safe
# to re-run.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (it installs Debian packages)" >&2
  exit 1
fi

export PATH="/usr/local/go/bin:$PATH"
if ! command -v go >/dev/null; then
  echo "setup.sh: Go is required (https://go.dev/doc/install); go.mod names the version" >&2
  exit 1
fi

pkgs=(protobuf-compiler openssh-server openssh-client sudo dbus make git ca-certificates
      mmdebstrap systemd-container apt-cacher-ng iproute2 util-linux vagrant
      rpm createrepo-c dnf zypper apt-utils gnupg ansible)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# dnf's versionlock plugin: Debian's dnf-plugins-core conflicts with zypper
# (both ship needs-restarting), so its files are unpacked aside for the
# tests (distro/pkg finds them there) instead of installed.
vl=/usr/local/lib/kthw/dnf-plugins-core
if [ ! -f "$vl/usr/lib/python3/dist-packages/dnf-plugins/versionlock.py" ]; then
  tmp=$(mktemp -d)
  chown _apt "$tmp" 2>/dev/null || true  # apt downloads as _apt
  (cd "$tmp" && apt-get download -q dnf-plugins-core) ||
    (apt-get update -q && cd "$tmp" && apt-get download -q dnf-plugins-core)
  mkdir -p "$vl"
  dpkg-deb -x "$tmp"/dnf-plugins-core_*.deb "$vl"
  rm -rf "$tmp"
fi

# sshd refuses to start without its privilege-separation directory.
install -d -m 0755 /run/sshd

go mod download
echo "setup.sh: ready"
