"""Device safety in a test guest: refusals happen before any driver is touched, and
an interrupted or crashed run gets the original driver back.

The guest's igb NIC plays the lab host's own NIC (bound to the igb driver, with an
interface that can be up, where the guest kernel has the driver: the x86_64 one does);
the virtio-serial device carrying the agent plays the console. Runs only on qemu
backends: on a lab host these would take real devices.
"""

from __future__ import annotations

import json
from typing import Any, cast

import pytest

from backends import Backend
from harness import marks
from harness.vfio_claim import GuestRunner, run_in_guest
from vm_images.arch import TEST_DEVICE_BDFS

# On the host: these start runs inside the guest and interrupt them.
pytestmark = marks.on_host

IGB = TEST_DEVICE_BDFS["igb"]
MODULE = "python3 -m backends.kernel.vfio_devices"


@pytest.fixture
def guest(backend: Backend) -> GuestRunner:
    """The qemu backend, as something that runs commands in its guest."""
    if not backend.spec.startswith("qemu:"):
        pytest.skip("device safety is exercised in a throwaway guest only (qemu backends)")
    return cast(GuestRunner, backend)


def sh(guest: GuestRunner, script: str, timeout: float = 120.0) -> str:
    """Run a shell script in the guest; its output (failing the test on exit != 0)."""
    code, output, timed_out = guest.run(["sh", "-c", script], timeout)
    text = output.decode("utf-8", "replace")
    assert code == 0 and not timed_out, f"guest script failed ({code}): {text}"
    return text


IFF_UP = 0x1
# SIOCGIFFLAGS / SIOCSIFFLAGS on an AF_UNIX socket: the guest kernel has no INET (and so
# busybox's `ip link` has no socket to ask with), but any socket reaches the device ioctls.
_SET_LINK = """
import fcntl, socket, struct, sys
name, up = sys.argv[1].encode(), sys.argv[2] == "up"
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
flags = struct.unpack_from("H", fcntl.ioctl(sock, 0x8913, struct.pack("16sH22x", name, 0)), 16)[0]
flags = flags | 1 if up else flags & ~1
fcntl.ioctl(sock, 0x8914, struct.pack("16sH22x", name, flags))
"""


def set_link(guest: GuestRunner, iface: str, *, up: bool) -> None:
    """Bring ``iface`` up or down in the guest (what ``ip link set dev IFACE up`` does)."""
    code, output, _ = guest.run(["python3", "-c", _SET_LINK, iface, "up" if up else "down"],
                                60.0)
    assert code == 0, output.decode("utf-8", "replace")


def status(guest: GuestRunner, bdf: str = IGB) -> dict[str, Any]:
    """The device's driver, cdev and pending records in the guest."""
    result: list[dict[str, Any]] = run_in_guest(guest, ["status", bdf])
    return result[0]


def refused(guest: GuestRunner, *args: str) -> str:
    """Run ``claim ARGS`` expecting a refusal; the reason."""
    code, output, _ = guest.run(["python3", "-m", "backends.kernel.vfio_devices", "claim",
                                 *args], 120.0)
    text = output.decode("utf-8", "replace").strip()
    assert code == 3, f"claim {' '.join(args)} was not refused ({code}): {text}"
    return str(json.loads(text.splitlines()[-1])["refused"])


def _bdf_of(guest: GuestRunner, vendor: str, devices: tuple[str, ...]) -> str:
    script = ("for d in /sys/bus/pci/devices/*; do echo ${d##*/} $(cat $d/vendor) "
              "$(cat $d/device); done")
    for line in sh(guest, script).splitlines():
        bdf, ven, dev = line.split()
        if ven == vendor and dev in devices:
            return bdf
    raise AssertionError(f"no {vendor}:{devices} device in the guest")


@pytest.fixture
def igb_driver(guest: GuestRunner) -> str | None:
    """The driver the guest's igb starts on: ``igb``, or None where the kernel has no
    igb driver; never vfio-pci (nothing may have left it there)."""
    driver: str | None = status(guest)["driver"]
    assert driver in ("igb", None), f"igb starts on {driver}"
    return driver


def test_rebinding_needs_the_opt_in(guest: GuestRunner, igb_driver: str | None) -> None:
    reason = refused(guest, IGB)
    assert "needs the explicit opt-in" in reason
    assert status(guest)["driver"] == igb_driver


def test_unknown_and_bridge_devices_are_refused(guest: GuestRunner) -> None:
    assert "no PCI device" in refused(guest, "0000:00:1e.7", "--allow-bind")
    assert "host bridge" in refused(guest, "0000:00:00.0", "--allow-bind") or \
        "not behind an IOMMU" in refused(guest, "0000:00:00.0", "--allow-bind")
    assert "not a PCI address" in refused(guest, "eth0")


def test_an_interface_that_is_up_is_refused(guest: GuestRunner,
                                           igb_driver: str | None) -> None:
    if igb_driver is None:
        pytest.skip("the guest kernel has no igb driver, so igb has no interface")
    iface = sh(guest, f"ls /sys/bus/pci/devices/{IGB}/net").split()[0]
    set_link(guest, iface, up=True)
    try:
        assert int(sh(guest, f"cat /sys/class/net/{iface}/flags"), 16) & IFF_UP
        reason = refused(guest, IGB, "--allow-bind")
        assert f"network interface {iface} is up" in reason
        assert status(guest)["driver"] == "igb", "a driver was touched before the refusal"
    finally:
        set_link(guest, iface, up=False)


def test_the_console_channel_is_refused(guest: GuestRunner) -> None:
    # virtio-serial-pci: 1af4:1003 (transitional) or 1af4:1043 (modern)
    bdf = _bdf_of(guest, "0x1af4", ("0x1003", "0x1043"))
    reason = refused(guest, bdf, "--allow-bind")
    assert "virtio-serial port" in reason and "console" in reason


def test_ctrl_c_restores_the_driver(guest: GuestRunner, igb_driver: str | None) -> None:
    script = (f"{MODULE} hold {IGB} --allow-bind --seconds 60 > /tmp/hold.out 2>&1 & "
              "pid=$!; i=0; "
              f"while [ \"$(basename $(readlink /sys/bus/pci/devices/{IGB}/driver))\" "
              "!= vfio-pci ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; "
              f"echo during=$(basename $(readlink /sys/bus/pci/devices/{IGB}/driver)); "
              "kill -INT $pid; wait $pid; echo status=$?; cat /tmp/hold.out")
    out = sh(guest, script)
    assert "during=vfio-pci" in out, out
    assert "status=130" in out and '"interrupted"' in out, out
    after = status(guest)
    assert after["driver"] == igb_driver and after["records"] == [], after


def test_a_crashed_run_is_restored_at_the_next_start(guest: GuestRunner,
                                                     igb_driver: str | None) -> None:
    code, output, _ = guest.run(["sh", "-c", f"{MODULE} hold {IGB} --allow-bind --crash"],
                                120.0)
    assert code != 0, f"the holding process was meant to die by SIGKILL: {output!r}"
    left = status(guest)
    assert left["driver"] == "vfio-pci" and len(left["records"]) == 1, left
    assert left["records"][0]["driver"] == igb_driver
    restored = run_in_guest(guest, ["restore-pending"])
    assert [r["bdf"] for r in restored] == [IGB]
    after = status(guest)
    assert after["driver"] == igb_driver and after["records"] == [], after
    if igb_driver is not None:
        assert sh(guest, f"ls /sys/bus/pci/devices/{IGB}/net").split(), "no netdev again"
