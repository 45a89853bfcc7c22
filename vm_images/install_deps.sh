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
#   guest boot:        qemu-system-x86 qemu-system-arm, procps (the tests' pgrep
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
qemu-system-x86 qemu-system-arm procps python3 python3-venv debian-archive-keyring"
case "$(dpkg --print-architecture)" in
    amd64) PKGS="$PKGS gcc-aarch64-linux-gnu libc6-dev-arm64-cross" ;;
    arm64) PKGS="$PKGS gcc-x86-64-linux-gnu libc6-dev-amd64-cross" ;;
esac
case "${1:-}" in
    "") ;;
    venv) PKGS="python3 python3-venv" ;;
    *) echo "install_deps: unknown argument '$1' (none, or venv)" >&2; exit 2 ;;
esac

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "install_deps: missing:$missing (run as root to install them)" >&2
    exit 1
fi
echo "install_deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
echo "install_deps: done"
