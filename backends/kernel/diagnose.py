"""Why this kernel has no /dev/iommu, in one line.

The answer comes from what the running kernel shows (its config in
/proc/config.gz or /boot, /sys/module, the modules directory), in the order a
reader would check by hand.
"""

from __future__ import annotations

import gzip
import os
import re

DEV_IOMMU = "/dev/iommu"
_CONFIG_LINE = re.compile(rb"^(?:CONFIG_IOMMUFD=(?P<value>[ym])|# CONFIG_IOMMUFD is not set)$",
                          re.MULTILINE)


def config_iommufd(release: str) -> tuple[str | None, str | None]:
    """CONFIG_IOMMUFD of the running kernel as ``("y"|"m"|"n", source)``, or
    ``(None, None)`` when no config is readable."""
    sources = ("/proc/config.gz", f"/boot/config-{release}")
    for source in sources:
        try:
            if source.endswith(".gz"):
                with gzip.open(source, "rb") as f:
                    text = f.read()
            else:
                with open(source, "rb") as f:
                    text = f.read()
        except OSError:
            continue
        match = _CONFIG_LINE.search(text)
        if match is None:
            return "n", source  # not even mentioned: its menu (IOMMU_SUPPORT) is off
        value = match.group("value")
        return (value.decode() if value else "n"), source
    return None, None


def module_installed(release: str) -> bool:
    """An iommufd.ko is installed for ``release``."""
    base = f"/lib/modules/{release}/kernel/drivers/iommu/iommufd"
    try:
        return any(n.startswith("iommufd.ko") for n in os.listdir(base))
    except OSError:
        return False


def missing_iommufd_reason(path: str = DEV_IOMMU) -> str:
    """One line: ``path`` is missing on this kernel, and why."""
    release = os.uname().release
    config, source = config_iommufd(release)
    if os.path.isdir("/sys/module/iommufd"):
        why = "iommufd is loaded but the device node is missing (is devtmpfs mounted on /dev?)"
    elif config == "n":
        why = f"this kernel is built without iommufd (CONFIG_IOMMUFD is not set in {source})"
    elif config == "m" or module_installed(release):
        why = "the iommufd module is not loaded (modprobe iommufd)"
    elif config == "y":
        why = f"iommufd is built in ({source}) but the device node is missing"
    else:
        why = "iommufd is neither loaded nor installed as a module (CONFIG_IOMMUFD unknown)"
    return f"kernel backend: no {path} on kernel {release}: {why}"
