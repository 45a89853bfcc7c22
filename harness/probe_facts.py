"""What this host offers the tests, read from udev's view of sysfs (pyudev).

:func:`collect` gathers the facts as a JSON-ready dict: /dev/iommu, the IOMMU units
(/sys/class/iommu), the IOMMU groups with their devices and drivers, the VFIO device
cdevs, the iommufd features the kernel answers for, and its fault injection. It only
reads; it opens /dev/iommu to ask the kernel what it supports and closes it again.
The same module runs in a test guest (``python3 -m harness.probe_facts``), where
it prints the JSON for the host to read.
"""

from __future__ import annotations

import glob
import importlib
import json
import os
import platform
import sys
from collections.abc import Iterable
from typing import Any

import pyudev

from backends.kernel.vfio_devices import read_text

DEV_IOMMU = "/dev/iommu"
FAULT_INJECTION = {
    "fail_nth": "/proc/thread-self/fail-nth",
    "failslab": "/sys/kernel/debug/failslab",
    "fail_page_alloc": "/sys/kernel/debug/fail_page_alloc",
}


#: where a Debian system keeps shared libraries (the multiarch ones for any machine)
LIBRARY_GLOBS = ("/lib/*-linux-gnu", "/usr/lib/*-linux-gnu", "/lib", "/usr/lib")


def _find_in_libdirs(name: str) -> str | None:
    for pattern in LIBRARY_GLOBS:
        for directory in sorted(glob.glob(pattern)):
            found = sorted(glob.glob(os.path.join(directory, f"lib{name}.so.*")))
            if found:
                return found[0]
    return None


def udev_context() -> pyudev.Context:
    """pyudev's Context. The test guests have no ld.so cache, so ctypes' find_library
    cannot name libudev there; pyudev then gets the library from the directories."""
    utils: Any = importlib.import_module("pyudev._ctypeslib.utils")
    if utils.find_library("udev") is None:
        utils.find_library = _find_in_libdirs
    return pyudev.Context()


def _attr(device: pyudev.Device, name: str) -> str | None:
    """A sysfs attribute as text, None when the device has no such attribute."""
    try:
        value = device.attributes.get(name)
    except (OSError, KeyError):
        return None
    return value.decode("utf-8", "replace").strip() if value is not None else None


def _driver(device: pyudev.Device) -> str | None:
    return device.driver or None


def unit_kind(name: str) -> str:
    """``intel_vtd`` for dmarN, ``arm_smmuv3`` for smmu3.*, else ``other``."""
    if name.startswith("dmar"):
        return "intel_vtd"
    if name.startswith("smmu3."):
        return "arm_smmuv3"
    return "other"


def iommu_units(context: pyudev.Context) -> list[dict[str, Any]]:
    """Each registered IOMMU unit: name, kind, the devices it translates for and,
    for VT-d, the cap / ecap registers the driver exports."""
    units = []
    for unit in sorted(context.list_devices(subsystem="iommu"), key=lambda d: d.sys_name):
        entry: dict[str, Any] = {"name": unit.sys_name, "kind": unit_kind(unit.sys_name)}
        devices_dir = os.path.join(unit.sys_path, "devices")
        try:
            entry["devices"] = sorted(os.listdir(devices_dir))
        except OSError:
            entry["devices"] = []
        for reg in ("cap", "ecap", "version"):
            value = _attr(unit, f"intel-iommu/{reg}")
            if value is not None:
                entry[reg] = value
        units.append(entry)
    return units


def _vfio_cdevs(context: pyudev.Context) -> dict[str, str]:
    """Parent device path -> /dev/vfio/devices/vfioN."""
    found = {}
    for cdev in context.list_devices(subsystem="vfio-dev"):
        if cdev.parent is not None:
            found[cdev.parent.sys_path] = cdev.device_node or f"/dev/vfio/devices/{cdev.sys_name}"
    return found


def _device_entry(device: pyudev.Device, cdevs: dict[str, str]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "address": device.sys_name,
        "subsystem": device.subsystem,
        "driver": _driver(device),
    }
    if device.subsystem == "pci":
        for field in ("vendor", "device", "class"):
            entry[field] = _attr(device, field)
        entry["driver_override"] = _attr(device, "driver_override")
        if entry["driver_override"] == "(null)":
            entry["driver_override"] = None
    iommu = os.path.join(device.sys_path, "iommu")
    entry["iommu"] = os.path.basename(os.path.realpath(iommu)) if os.path.exists(iommu) else None
    entry["vfio_cdev"] = cdevs.get(device.sys_path)
    return entry


def iommu_groups(context: pyudev.Context) -> list[dict[str, Any]]:
    """Each IOMMU group: number, domain type, and its devices (address, ids, driver,
    the unit behind it, its VFIO cdev)."""
    cdevs = _vfio_cdevs(context)
    groups: dict[int, dict[str, Any]] = {}
    for device in context.list_devices():
        link = os.path.join(device.sys_path, "iommu_group")
        if not os.path.islink(link):
            continue
        group_dir = os.path.realpath(link)
        number = int(os.path.basename(group_dir))
        group = groups.setdefault(number, {"group": number, "type": read_text(
            os.path.join(group_dir, "type")), "devices": []})
        group["devices"].append(_device_entry(device, cdevs))
    for group in groups.values():
        group["devices"].sort(key=lambda d: d["address"])
    return [groups[n] for n in sorted(groups)]


def iommufd_facts() -> dict[str, Any]:
    """/dev/iommu: present, openable, and the features the kernel answers for."""
    from backends.kernel import diagnose, features

    facts: dict[str, Any] = {"path": DEV_IOMMU, "present": os.path.exists(DEV_IOMMU),
                             "features": [], "error": None}
    if not facts["present"]:
        facts["error"] = diagnose.missing_iommufd_reason(DEV_IOMMU)
        facts["features"] = sorted(features.host_features())
        return facts
    try:
        fd = os.open(DEV_IOMMU, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        facts["error"] = f"open {DEV_IOMMU}: {exc.strerror}"
        facts["features"] = sorted(features.host_features())
        return facts
    try:
        facts["features"] = sorted(features.detect(fd))
    finally:
        os.close(fd)
    return facts


def fault_injection() -> dict[str, bool]:
    """Which fault-injection controls this kernel has."""
    return {name: os.path.exists(path) for name, path in FAULT_INJECTION.items()}


def collect(context: pyudev.Context | None = None) -> dict[str, Any]:
    """Every fact the probe reports about the machine it runs on."""
    context = context or udev_context()
    groups = iommu_groups(context)
    return {
        "machine": platform.machine(),
        "kernel_release": platform.release(),
        "iommufd": iommufd_facts(),
        "fault_injection": fault_injection(),
        "iommu_units": iommu_units(context),
        "iommu_groups": groups,
        "vfio_cdevs": sorted(d["vfio_cdev"] for g in groups for d in g["devices"]
                             if d["vfio_cdev"]),
    }


def devices(facts: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """Every device of every group in ``facts``."""
    for group in facts["iommu_groups"]:
        yield from group["devices"]


def main() -> int:
    """Print :func:`collect`'s facts as JSON (what a guest hands the host)."""
    json.dump(collect(), sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
