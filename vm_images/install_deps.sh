#!/bin/sh
# Install the host packages that building and booting the test guests need (Debian 12).
#
#   sh vm_images/install_deps.sh          everything below
#   sh vm_images/install_deps.sh venv     only python3-venv: what the README's quick start
#                                         needs on Debian/Ubuntu, whose own python3 refuses
#                                         pip installs outside a virtual environment (PEP 668)
#
# Idempotent and quiet: prints nothing and changes nothing when everything is there;
# otherwise refreshes apt's lists once and installs only what is missing. Run as root.
#
#   kernel build:      build-essential bc flex bison libelf-dev libssl-dev cpio kmod
#   cross compilers:   gcc-aarch64-linux-gnu on an x86_64 host (gcc-x86-64-linux-gnu on
#                      an arm64 one), and the target's C library for the static
#                      selftests (only recommended by the compiler, so named here)
#   guest boot:        qemu-system-x86 qemu-system-arm at version 8 or later (QEMU 8
#                      added the igb device; 10 gives aarch64's SMMUv3 its stage 2),
#                      taken from <codename>-backports, and procps (the tests' pgrep
#                      proves no QEMU outlives a run)
#   the project:       python3-venv (.ci/run and the README install into a venv)
#   guest userspace:   python3 (bookworm's 3.11 precompiles the guest's bytecode),
#                      debian-archive-keyring (the private apt configuration checks
#                      Debian's signatures with it)
#
# Not needed here: the guests' python3.11, cffi, busybox and the selftests' libcap come
# from Debian packages for the *target* architecture, fetched and unpacked by
# vm_images with a private apt configuration; the host's dpkg architectures stay as
# they are (no multiarch).
set -eu

PKGS="build-essential bc flex bison libelf-dev libssl-dev cpio kmod
procps python3 python3-venv debian-archive-keyring"
QEMU_PKGS="qemu-system-x86 qemu-system-arm"
QEMU_MIN="1:8"
# The mirror vm_images/debian.py fetches from; the suite follows the host's release.
MIRROR="http://deb.debian.org/debian"
CODENAME="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
BACKPORTS="$CODENAME-backports"
BACKPORTS_LIST="/etc/apt/sources.list.d/iommufd-harness-backports.sources"
case "$(dpkg --print-architecture)" in
    amd64) PKGS="$PKGS gcc-aarch64-linux-gnu libc6-dev-arm64-cross" ;;
    arm64) PKGS="$PKGS gcc-x86-64-linux-gnu libc6-dev-amd64-cross" ;;
esac
case "${1:-}" in
    "") ;;
    venv) PKGS="python3 python3-venv" QEMU_PKGS="" ;;  # only what the quick start needs
    *) echo "install_deps: unknown argument '$1' (none, or venv)" >&2; exit 2 ;;
esac

installed() {
    dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

missing=""
for p in $PKGS; do
    installed "$p" || missing="$missing $p"
done
# QEMU counts as missing when it is absent or older than QEMU_MIN.
old_qemu=""
for p in $QEMU_PKGS; do
    v="$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null || true)"
    if ! installed "$p" || ! dpkg --compare-versions "$v" ge "$QEMU_MIN"; then
        old_qemu="$old_qemu $p"
    fi
done
[ -z "$missing$old_qemu" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "install_deps: missing:$missing$old_qemu (QEMU >= ${QEMU_MIN#1:}; run as root to install them)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo "install_deps: installing:$missing$old_qemu"
if [ -n "$missing" ]; then
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
if [ -n "$old_qemu" ]; then
    if [ -z "$CODENAME" ]; then
        echo "install_deps: /etc/os-release names no VERSION_CODENAME; cannot pick a backports suite" >&2
        exit 1
    fi
    # One deb822 source for the backports suite only (after the keyring above is in
    # place). Backports' Release file pins it at 100, so nothing else on the host moves
    # to it: only what -t asks for. Written only when its content differs, so a second
    # run changes nothing.
    want="Types: deb
URIs: $MIRROR
Suites: $BACKPORTS
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
    if [ "$(cat "$BACKPORTS_LIST" 2>/dev/null)" != "$want" ]; then
        printf '%s\n' "$want" >"$BACKPORTS_LIST"
    fi
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends -t "$BACKPORTS" $old_qemu >/dev/null
fi
echo "install_deps: done"
