"""PCI devices handed to vfio-pci for a test, safely, and always handed back.

On a lab host a test device is a real NIC or disk controller: giving the wrong one to
vfio-pci takes it away from the host. So:

* a device is checked before any driver is touched (:func:`refusal`): it must exist,
  sit behind an IOMMU, share its IOMMU group only with devices already on vfio-pci
  (or none), not be a bridge, and not be in use: no mounted or swapped-on block
  device, no network interface that is up, no console (or virtio-serial port)
  beneath it;
* rebinding to vfio-pci happens only when the caller opted in (``allow_bind``);
* before the first sysfs write a record of the original driver is written to disk
  (:data:`RECORD_DIR`), so :func:`restore_pending` can hand the device back at the
  start of the next run when the test process died without restoring it;
* :func:`claimed` restores the original driver when its block ends, also on an
  exception or Ctrl-C.

Plain sysfs and procfs reads and writes on the machine this runs on (a host, or the
test guest through ``python3 -m backends.kernel.vfio_devices``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

SYSFS_PCI = "/sys/bus/pci"
VFIO_PCI = "vfio-pci"
#: where binding records live (env IOMMUFD_VFIO_RECORDS); a tmpfs on most hosts, which
#: is right: a reboot resets driver bindings and the records with them
RECORD_DIR_ENV = "IOMMUFD_VFIO_RECORDS"
RECORD_DIR = "/run/iommufd-harness/vfio"
_BDF = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_IFF_UP = 0x1
# PCI base classes a test must never take: host bridges and PCI bridges
_BRIDGE_CLASSES = {0x0600: "a host bridge", 0x0604: "a PCI bridge", 0x0609: "a PCI bridge"}


class DeviceRefused(RuntimeError):
    """The device may not be used or rebound; the message says why, in one line."""


@dataclass(frozen=True)
class Binding:
    """What a device was bound to before vfio-pci took it (the on-disk record)."""

    bdf: str
    driver: str | None           # the original driver, None when it had none
    driver_override: str | None  # the original driver_override
    pid: int                     # the process that rebound it
    time: float


def record_dir() -> str:
    """Where binding records are kept."""
    return os.environ.get(RECORD_DIR_ENV) or RECORD_DIR


def normalize_bdf(bdf: str) -> str:
    """``0000:00:03.0`` for ``00:03.0`` or upper case; ValueError for anything else."""
    text = bdf.strip().lower()
    if text.count(":") == 1:
        text = "0000:" + text
    if not _BDF.match(text):
        raise ValueError(f"{bdf!r} is not a PCI address (DDDD:BB:SS.F)")
    return text


def device_dir(bdf: str) -> str:
    """The device's sysfs directory."""
    return os.path.join(SYSFS_PCI, "devices", bdf)


def read_text(path: str) -> str | None:
    """A small text file (sysfs, procfs) stripped, None when it cannot be read."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def current_driver(bdf: str) -> str | None:
    """The driver bound to the device, None when none is."""
    link = os.path.join(device_dir(bdf), "driver")
    return os.path.basename(os.readlink(link)) if os.path.islink(link) else None


def driver_override(bdf: str) -> str | None:
    """The device's driver_override, None when unset."""
    value = read_text(os.path.join(device_dir(bdf), "driver_override"))
    return None if value in (None, "", "(null)") else value


def iommu_group_devices(bdf: str) -> list[str]:
    """The devices of the device's IOMMU group (itself included)."""
    group = os.path.join(device_dir(bdf), "iommu_group")
    return sorted(os.listdir(os.path.join(group, "devices")))


def vfio_cdev(bdf: str) -> str | None:
    """/dev/vfio/devices/vfioN of a device bound to vfio-pci, None otherwise."""
    try:
        names = os.listdir(os.path.join(device_dir(bdf), "vfio-dev"))
    except OSError:
        return None
    return f"/dev/vfio/devices/{names[0]}" if names else None


def _subtree(top: str) -> Iterator[str]:
    """Directories under a device, not following links (so not into other devices)."""
    for dirpath, dirs, _files in os.walk(top, followlinks=False):
        dirs[:] = [d for d in dirs if d not in ("subsystem", "driver", "iommu_group",
                                                "iommu", "firmware_node", "power")]
        yield dirpath


def _mounted_devnums() -> set[str]:
    """``major:minor`` of every mounted filesystem's device and every swap device."""
    found = set()
    for line in (read_text("/proc/self/mountinfo") or "").splitlines():
        fields = line.split()
        if len(fields) > 2:
            found.add(fields[2])
    for line in (read_text("/proc/swaps") or "").splitlines()[1:]:
        path = line.split()[0] if line.split() else ""
        try:
            st = os.stat(path)
        except OSError:
            continue
        found.add(f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
    return found


def _consoles() -> set[str]:
    """The ttys the kernel writes its console to (/proc/consoles)."""
    return {line.split()[0] for line in (read_text("/proc/consoles") or "").splitlines()
            if line.split()}


def in_use(bdf: str) -> str | None:
    """Why the device is in use (a mounted disk, an up interface, a console), or None."""
    mounted = _mounted_devnums()
    consoles = _consoles()
    for path in _subtree(device_dir(bdf)):
        parent, name = os.path.split(path)
        kind = os.path.basename(parent)
        if kind == "block":
            dev = read_text(os.path.join(path, "dev"))
            if dev in mounted:
                return f"block device {name} is mounted or swapped on"
            for part in os.listdir(path):
                if read_text(os.path.join(path, part, "dev")) in mounted:
                    return f"block device {part} (on {name}) is mounted or swapped on"
        elif kind == "net":
            flags = read_text(os.path.join(path, "flags"))
            if flags is not None and int(flags, 16) & _IFF_UP:
                return f"network interface {name} is up"
        elif kind == "tty" and name in consoles:
            return f"it carries the console {name}"
        elif kind == "virtio-ports":
            port = read_text(os.path.join(path, "name"))
            return f"it carries the virtio-serial port {port or name} (a console channel)"
    return None


def refusal(bdf: str, *, allow_bind: bool) -> str | None:
    """Why the device may not become a VFIO test device, or None when it may."""
    top = device_dir(bdf)
    if not os.path.isdir(top):
        return f"no PCI device {bdf}"
    klass = int(read_text(os.path.join(top, "class")) or "0", 16) >> 8
    if klass in _BRIDGE_CLASSES:
        return f"{bdf} is {_BRIDGE_CLASSES[klass]}"
    if not os.path.exists(os.path.join(top, "iommu_group")):
        return f"{bdf} is not behind an IOMMU (no iommu_group)"
    others = [d for d in iommu_group_devices(bdf)
              if d != bdf and current_driver(d) not in (None, VFIO_PCI)]
    if others:
        return (f"{bdf} shares its IOMMU group with {', '.join(others)}, bound to "
                f"{', '.join(sorted({str(current_driver(d)) for d in others}))}")
    driver = current_driver(bdf)
    if driver == VFIO_PCI:
        return None
    busy = in_use(bdf)
    if busy:
        return f"{bdf} is in use: {busy}"
    if not allow_bind:
        return (f"{bdf} is bound to {driver or 'no driver'}, not {VFIO_PCI}; binding it "
                "needs the explicit opt-in (--iommufd-vfio-bind)")
    return None


# -- records -------------------------------------------------------------

def _record_path(bdf: str) -> str:
    return os.path.join(record_dir(), f"{bdf}.json")


def write_record(binding: Binding) -> None:
    """Persist ``binding`` before any driver is touched (fsynced)."""
    os.makedirs(record_dir(), exist_ok=True)
    path = _record_path(binding.bdf)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(asdict(binding), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_records() -> list[Binding]:
    """Every binding record on disk."""
    try:
        names = sorted(os.listdir(record_dir()))
    except OSError:
        return []
    records = []
    for name in names:
        if name.endswith(".json"):
            with open(os.path.join(record_dir(), name)) as f:
                records.append(Binding(**json.load(f)))
    return records


# -- binding -------------------------------------------------------------

def bind_vfio(bdf: str, *, allow_bind: bool) -> Binding | None:
    """Give the device to vfio-pci (after :func:`refusal` found no reason not to).

    Returns the record of its original driver, or None when it already was on
    vfio-pci (nothing to restore). DeviceRefused before any write otherwise.
    """
    bdf = normalize_bdf(bdf)
    reason = refusal(bdf, allow_bind=allow_bind)
    if reason:
        raise DeviceRefused(reason)
    driver = current_driver(bdf)
    if driver == VFIO_PCI:
        return None
    binding = Binding(bdf, driver, driver_override(bdf), os.getpid(), time.time())
    write_record(binding)
    top = device_dir(bdf)
    _write(os.path.join(top, "driver_override"), VFIO_PCI)
    if driver is not None:
        _write(os.path.join(top, "driver", "unbind"), bdf)
    _write(os.path.join(SYSFS_PCI, "drivers_probe"), bdf)
    if current_driver(bdf) != VFIO_PCI:
        restore(binding)
        raise DeviceRefused(f"{bdf}: vfio-pci did not take the device (is CONFIG_VFIO_PCI on?)")
    return binding


def restore(binding: Binding) -> None:
    """Hand the device back to its original driver and drop the record."""
    bdf = binding.bdf
    top = device_dir(bdf)
    if os.path.isdir(top):
        driver = current_driver(bdf)
        if driver is not None and driver != binding.driver:
            _write(os.path.join(top, "driver", "unbind"), bdf)
        # An empty write clears driver_override.
        _write(os.path.join(top, "driver_override"), binding.driver_override or "\n")
        if binding.driver is not None and current_driver(bdf) is None:
            _write(os.path.join(SYSFS_PCI, "drivers", binding.driver, "bind"), bdf)
        if current_driver(bdf) != binding.driver:
            raise OSError(f"{bdf}: could not restore driver {binding.driver}")
    os.unlink(_record_path(bdf))


def restore_pending() -> list[Binding]:
    """Restore every device a dead run left on vfio-pci; returns what was restored.

    A record whose process still runs belongs to a live run and is left alone.
    """
    restored = []
    for binding in read_records():
        if binding.pid != os.getpid() and _alive(binding.pid):
            continue
        restore(binding)
        restored.append(binding)
    return restored


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def claimed(bdfs: Sequence[str], *, allow_bind: bool) -> Iterator[dict[str, str]]:
    """Every device on vfio-pci for the block (``{bdf: /dev/vfio/devices/vfioN}``),
    each original driver restored afterwards, also on an exception or Ctrl-C.

    Every device is checked before the first one is touched.
    """
    bindings = claim(bdfs, allow_bind=allow_bind)
    try:
        cdevs = {}
        for bdf in (normalize_bdf(b) for b in bdfs):
            cdev = vfio_cdev(bdf)
            if cdev is None:
                raise DeviceRefused(f"{bdf} is on vfio-pci but has no VFIO cdev "
                                    "(CONFIG_VFIO_DEVICE_CDEV)")
            cdevs[bdf] = cdev
        yield cdevs
    finally:
        for binding in reversed(bindings):
            restore(binding)


# -- command line (what a host runs in a test guest) -------------------------

def describe(bdf: str) -> dict[str, Any]:
    """The device as a test sees it: ids, driver, VFIO cdev, pending records."""
    top = device_dir(bdf)
    return {"bdf": bdf, "vendor": read_text(os.path.join(top, "vendor")),
            "device": read_text(os.path.join(top, "device")), "driver": current_driver(bdf),
            "vfio_cdev": vfio_cdev(bdf),
            "records": [asdict(r) for r in read_records() if r.bdf == bdf]}


def claim(bdfs: Sequence[str], *, allow_bind: bool) -> list[Binding]:
    """Check every device, then bind each to vfio-pci; the records of those rebound.

    Undoes the bindings already made when a later one fails."""
    bdfs = [normalize_bdf(b) for b in bdfs]
    for bdf in bdfs:
        reason = refusal(bdf, allow_bind=allow_bind)
        if reason:
            raise DeviceRefused(reason)
    bindings: list[Binding] = []
    try:
        for bdf in bdfs:
            binding = bind_vfio(bdf, allow_bind=allow_bind)
            if binding is not None:
                bindings.append(binding)
    except BaseException:
        for binding in reversed(bindings):
            restore(binding)
        raise
    return bindings


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m backends.kernel.vfio_devices check|claim|hold|restore-pending|status``.

    Prints one JSON object; exit status 3 with ``{"refused": reason}`` when refused.
    ``hold`` binds, prints, then sleeps (``--crash``: dies by SIGKILL instead of
    restoring), so a caller can interrupt it and watch the restore.
    """
    parser = argparse.ArgumentParser(prog="vfio_devices")
    parser.add_argument("action", choices=("check", "claim", "hold", "restore-pending",
                                           "status"))
    parser.add_argument("bdf", nargs="*")
    parser.add_argument("--allow-bind", action="store_true")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--crash", action="store_true")
    args = parser.parse_args(argv)
    try:
        bdfs = [normalize_bdf(b) for b in args.bdf]
        if args.action == "check":
            out: object = {b: refusal(b, allow_bind=args.allow_bind) for b in bdfs}
        elif args.action == "claim":
            claim(bdfs, allow_bind=args.allow_bind)
            out = [describe(b) for b in bdfs]
        elif args.action == "hold":
            # A shell starts background jobs with SIGINT ignored; a held device must
            # still come back on Ctrl-C (and on SIGTERM).
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            if args.crash:
                for bdf in bdfs:
                    bind_vfio(bdf, allow_bind=args.allow_bind)
                print(json.dumps([describe(b) for b in bdfs]), flush=True)
                os.kill(os.getpid(), 9)
            with claimed(bdfs, allow_bind=args.allow_bind) as cdevs:
                print(json.dumps(cdevs), flush=True)
                time.sleep(args.seconds)
            out = [describe(b) for b in bdfs]
        elif args.action == "restore-pending":
            out = [asdict(b) for b in restore_pending()]
        else:
            out = [describe(b) for b in bdfs]
    except (DeviceRefused, ValueError) as exc:
        print(json.dumps({"refused": str(exc)}))
        return 3
    except KeyboardInterrupt:
        print(json.dumps({"interrupted": [describe(normalize_bdf(b)) for b in args.bdf]}))
        return 130
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
