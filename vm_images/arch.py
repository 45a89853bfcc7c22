"""Per-architecture settings for the test guests, and the QEMU command line built from them.

One small frozen dataclass per architecture, in the style of kunit_tool's
qemu_configs: everything that differs between x86_64 and aarch64 is a field here,
so kernel builds, initramfs builds and the qemu backend never branch on the name.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

#: Environment variable that opts in to KVM (``kvm``); anything else, or unset, is TCG.
ACCEL_ENV = "IOMMUFD_QEMU_ACCEL"

#: The virtio-serial port name the guest agent listens on (/dev/virtio-ports/NAME).
AGENT_PORT = "org.iommufd.agent"


#: Slot of each emulated test device on the root bus (function 0), the same on both
#: boards so tests can name them by BDF: ``edu`` (1234:11e8, a DMA engine) and ``igb``
#: (8086:10c9, an 82576 NIC; QEMU 8 or later).
TEST_DEVICE_SLOTS = {"edu": 0x03, "igb": 0x04}

#: The PCI bus address of each test device in the guest.
TEST_DEVICE_BDFS = {name: f"0000:00:{slot:02x}.0" for name, slot in TEST_DEVICE_SLOTS.items()}

#: QEMU arguments for the test devices. The NIC gets a user-mode network with
#: ``restrict=on`` as its peer (no traffic leaves the guest; QEMU warns about a NIC
#: without one).
TEST_DEVICES = (
    "-device", f"edu,addr={TEST_DEVICE_SLOTS['edu']:02x}.0",
    "-netdev", "user,id=labnet,restrict=on",
    "-device", f"igb,addr={TEST_DEVICE_SLOTS['igb']:02x}.0,netdev=labnet",
)


@dataclass(frozen=True)
class Arch:
    """How to build for, and boot, one guest architecture."""

    name: str                      # ours, and uname -m's: "x86_64", "aarch64"
    debian_arch: str               # Debian's: "amd64", "arm64"
    kernel_arch: str               # the kernel's ARCH=: "x86", "arm64"
    cross_compile: str             # CROSS_COMPILE= prefix when the host is another arch
    gnu_triplet: str               # multiarch directory: "x86_64-linux-gnu"
    make_target: str               # "bzImage", "Image"
    image_path: str                # the image, relative to the O= build directory
    qemu_binary: str
    machine_args: tuple[str, ...]  # -M and -cpu (the accelerator is chosen at boot)
    iommu_args: tuple[str, ...]    # the emulated IOMMU (a -device, or nothing if -M has it)
    test_devices: tuple[str, ...]  # PCI devices behind that IOMMU for the VFIO tests
    console: str                   # the serial console device in the guest
    cmdline: tuple[str, ...]       # kernel command line items this architecture needs

    @property
    def config_fragment(self) -> Path:
        """The Kconfig fragment for this architecture (vm_images/configs/NAME.config)."""
        return CONFIG_DIR / f"{self.name}.config"

    @property
    def host_native(self) -> bool:
        """True when the host runs this architecture (no cross compiler, KVM possible)."""
        return platform.machine() == self.name

    @property
    def cross_prefix(self) -> str:
        """The CROSS_COMPILE prefix to use on this host ("" when native)."""
        return "" if self.host_native else self.cross_compile

    def kernel_cmdline(self, append: Sequence[str] = ()) -> str:
        """The guest kernel command line: console, reboot-on-panic, arch items, ``append``.

        ``panic=-1`` turns a panic into an immediate reset, which ``-no-reboot`` turns
        into QEMU exiting: a crashed guest ends the run instead of hanging it.
        """
        return " ".join([f"console={self.console}", "panic=-1", *self.cmdline, *append])

    def qemu_argv(self, kernel: Path, initrd: Path, *, append: Sequence[str] = (),
                  extra: Sequence[str] = (), memory: str = "2G", smp: int = 2) -> list[str]:
        """The whole QEMU command line booting ``kernel`` with ``initrd``.

        The guest console is a serial port on QEMU's stdio (multiplexed with the
        monitor: Ctrl-A x quits); there is no display and no default device. The
        emulated IOMMU is always there. ``append`` goes to the kernel command line
        (for example ``iommufd.mode=selftests``). The test devices (``TEST_DEVICES``) sit
        behind the IOMMU at fixed addresses. ``extra`` goes to QEMU as it is, after
        everything else (chardevs, the agent's virtio-serial port:
        see ``agent_channel_args``). The accelerator is TCG unless
        ``IOMMUFD_QEMU_ACCEL=kvm`` (see ``choose_accel``).
        """
        return [
            self.qemu_binary,
            *self.machine_args,
            "-accel", choose_accel(self),
            "-smp", str(smp),
            "-m", memory,
            "-nodefaults", "-no-user-config", "-display", "none",
            "-serial", "mon:stdio",
            # A guest reset (panic=-1, reboot -f) ends QEMU instead of booting again.
            "-no-reboot",
            *self.iommu_args,
            *self.test_devices,
            "-kernel", str(kernel),
            "-initrd", str(initrd),
            "-append", self.kernel_cmdline(append),
            *extra,
        ]


X86_64 = Arch(
    name="x86_64",
    debian_arch="amd64",
    kernel_arch="x86",
    cross_compile="x86_64-linux-gnu-",
    gnu_triplet="x86_64-linux-gnu",
    make_target="bzImage",
    image_path="arch/x86/boot/bzImage",
    qemu_binary="qemu-system-x86_64",
    # -cpu max: RDRAND, so the guest's first python3 does not stall 1 s for entropy.
    machine_args=("-M", "q35", "-cpu", "max"),
    iommu_args=("-device", "intel-iommu"),
    test_devices=TEST_DEVICES,
    console="ttyS0",
    # no_timer_check: on a loaded host TCG delivers the IO-APIC timer too late for the
    # boot-time check, which then panics the guest (panic_if_irq_remap, seen here at
    # load 15). The check tests the board, not iommufd.
    cmdline=("intel_iommu=on", "no_timer_check"),
)

AARCH64 = Arch(
    name="aarch64",
    debian_arch="arm64",
    kernel_arch="arm64",
    cross_compile="aarch64-linux-gnu-",
    gnu_triplet="aarch64-linux-gnu",
    make_target="Image",
    image_path="arch/arm64/boot/Image",
    qemu_binary="qemu-system-aarch64",
    # gic-version=3: GICv2m has no MSI isolation, VFIO_DEVICE_BIND_IOMMUFD would be EPERM.
    # pauth-impdef=on: TCG emulates the architected pointer-auth cipher slowly; with the
    # implementation-defined one the guest boots in half the time.
    machine_args=("-M", "virt,iommu=smmuv3,gic-version=3", "-cpu", "max,pauth-impdef=on"),
    iommu_args=(),  # the SMMUv3 is part of the virt board (iommu=smmuv3)
    test_devices=TEST_DEVICES,
    console="ttyAMA0",
    cmdline=(),
)

ARCHES: dict[str, Arch] = {a.name: a for a in (X86_64, AARCH64)}


def get_arch(name: str) -> Arch:
    """The Arch called ``name`` ("x86_64" or "aarch64"; "amd64"/"arm64" are accepted too)."""
    aliases = {a.debian_arch: a.name for a in ARCHES.values()}
    try:
        return ARCHES[aliases.get(name, name)]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHES)}") from None


def kvm_usable() -> bool:
    """/dev/kvm exists and we may open it read-write."""
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def choose_accel(arch: Arch, requested: str | None = None) -> str:
    """``tcg`` unless KVM was asked for (argument, or env IOMMUFD_QEMU_ACCEL=kvm).

    KVM is opt-in: /dev/kvm on the project's machines only accepts special guests.
    Asking for it where it cannot work (foreign architecture, no usable /dev/kvm)
    is an error rather than a silent fallback, so a run never measures the wrong thing.
    """
    accel = (requested or os.environ.get(ACCEL_ENV) or "tcg").strip().lower()
    if accel == "tcg":
        return "tcg"
    if accel != "kvm":
        raise ValueError(f"{ACCEL_ENV}={accel!r}: expected 'tcg' or 'kvm'")
    if not arch.host_native:
        raise ValueError(f"accel kvm: host is {platform.machine()}, guest is {arch.name}")
    if not kvm_usable():
        raise ValueError("accel kvm: /dev/kvm is missing or not accessible")
    return "kvm"


def agent_channel_args(socket_path: Path | str, *, name: str = AGENT_PORT,
                       chardev_id: str = "agent") -> list[str]:
    """``extra`` for ``qemu_argv``: a virtio-serial port backed by a host UNIX socket.

    QEMU listens on ``socket_path`` without waiting for a client; the guest sees the
    port as /dev/virtio-ports/NAME.
    """
    return [
        "-device", "virtio-serial-pci",
        "-chardev", f"socket,id={chardev_id},path={socket_path},server=on,wait=off",
        "-device", f"virtserialport,chardev={chardev_id},name={name}",
    ]
