"""``iommufd-harness probe``: what a host (or a test guest) offers, and what can run there.

The facts come from :mod:`harness.probe_facts` (pyudev over sysfs, and /dev/iommu
itself); this module adds the verdicts (which backends and which test groups can
run, each with the reason when not) and prints them for a person or as JSON. With
``--backend qemu:ARCH`` the facts are collected inside that guest by running
``python3 -m harness.probe_facts`` there through the backend's ``run``.
"""

from __future__ import annotations

import json
import shutil
import sys
from typing import Any

from backends.contract import BackendError, Features
from harness.probe_facts import collect, devices

#: QEMU's edu device, whose DMA engine the DMA proof drives.
EDU_ID = ("0x1234", "0x11e8")
#: the qemu backends and the QEMU binary each needs on the host
QEMU_BINARIES = {"qemu:x86_64": "qemu-system-x86_64", "qemu:aarch64": "qemu-system-aarch64"}


class ProbeError(RuntimeError):
    """The probe could not run where it was asked to (a one-line reason)."""


def _verdict(ok: bool, why_not: str) -> dict[str, Any]:
    return {"can_run": ok, "reason": None if ok else why_not}


def _vfio_devices(facts: dict[str, Any]) -> list[dict[str, Any]]:
    """Devices with a VFIO cdev that sit behind an IOMMU unit."""
    return [d for d in devices(facts) if d.get("vfio_cdev") and d.get("iommu")]


def backend_verdicts(facts: dict[str, Any], *, host: bool) -> dict[str, dict[str, Any]]:
    """Which backends can run where the facts were collected (the qemu ones only on a
    host: a guest does not boot further guests)."""
    iommufd = facts["iommufd"]
    verdicts = {"mock": _verdict(True, ""),
                "kernel": _verdict(iommufd["present"] and iommufd["error"] is None,
                                   iommufd["error"] or "")}
    if host:
        for spec, binary in QEMU_BINARIES.items():
            verdicts[spec] = _verdict(shutil.which(binary) is not None,
                                      f"{binary} is not on PATH (vm_images/install_deps.sh)")
    return verdicts


def group_verdicts(facts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Which test groups can run on this machine's kernel backend, with the reason
    when one cannot."""
    features = set(facts["iommufd"]["features"])
    no_iommufd = facts["iommufd"]["error"] or "no /dev/iommu"
    have_fd = facts["iommufd"]["present"] and facts["iommufd"]["error"] is None
    vfio = _vfio_devices(facts)
    units = [u for u in facts["iommu_units"] if u["kind"] != "other"]
    edu = [d for d in vfio if (d.get("vendor"), d.get("device")) == EDU_ID]
    selftest = have_fd and Features.SELFTEST in features
    return {
        "iommufd": _verdict(selftest, no_iommufd if not have_fd else
                            "the kernel has no IOMMUFD_TEST mock devices (CONFIG_IOMMUFD_TEST)"),
        "iommufd.fail_nth": _verdict(selftest and Features.FAIL_NTH in features,
                                     "no /proc/thread-self/fail-nth (CONFIG_FAULT_INJECTION)"
                                     if selftest else "needs the iommufd group"),
        "vfio": _verdict(have_fd and bool(vfio), no_iommufd if not have_fd else
                         "no device bound to vfio-pci with a cdev behind an IOMMU"),
        "hardware": _verdict(have_fd and bool(units) and bool(vfio), no_iommufd if not have_fd
                             else "no VT-d or SMMUv3 unit" if not units
                             else "no VFIO cdev device behind the unit"),
        "dma_proof": _verdict(have_fd and bool(edu), no_iommufd if not have_fd else
                              "no edu device (1234:11e8) with a VFIO cdev"),
    }


def report(facts: dict[str, Any], *, where: str, host: bool) -> dict[str, Any]:
    """The facts plus the verdicts, as ``probe --json`` prints them."""
    return {"where": where, **facts, "backends": backend_verdicts(facts, host=host),
            "test_groups": group_verdicts(facts)}


def probe_guest(spec: str) -> dict[str, Any]:
    """Boot the ``qemu:ARCH`` guest and collect the facts inside it."""
    from backends import open_backend

    with open_backend(spec) as backend:
        run = getattr(backend, "run", None)
        if run is None:
            raise ProbeError(f"backend {spec} cannot run a command; probe it on its host")
        code, output, timed_out = run(["python3", "-m", "harness.probe_facts"], 120.0)
        text = output.decode("utf-8", "replace")
        if timed_out or code != 0:
            last = text.strip().splitlines()[-1:] or ["no output"]
            raise ProbeError(f"probe in {spec} failed (exit {code}"
                             f"{', timed out' if timed_out else ''}): {last[0]}")
        facts: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
        return report(facts, where=backend.describe(), host=False)


def probe(spec: str | None) -> dict[str, Any]:
    """The report for this host (``spec`` None, ``kernel`` or ``mock``) or a qemu guest."""
    if spec is None or spec in ("kernel", "mock"):
        return report(collect(), where="this host", host=True)
    if spec.startswith("qemu:"):
        return probe_guest(spec)
    raise ProbeError(f"--backend {spec!r}: expected kernel, qemu:x86_64 or qemu:aarch64")


def _yes(ok: bool) -> str:
    return "yes" if ok else "no"


def render(rep: dict[str, Any]) -> str:
    """The report as text for a person."""
    lines = [f"probe of {rep['where']}: {rep['machine']}, kernel {rep['kernel_release']}"]
    fd = rep["iommufd"]
    lines.append(f"/dev/iommu: {_yes(fd['present'])}"
                 + (f" ({fd['error']})" if fd["error"] else ""))
    lines.append(f"  features: {', '.join(fd['features']) or 'none'}")
    inj = rep["fault_injection"]
    lines.append("fault injection: " + ", ".join(f"{k} {_yes(v)}" for k, v in inj.items()))
    lines.append(f"IOMMU units: {len(rep['iommu_units']) or 'none'}")
    for unit in rep["iommu_units"]:
        regs = " ".join(f"{r}={unit[r]}" for r in ("cap", "ecap") if r in unit)
        lines.append(f"  {unit['name']} ({unit['kind']}) {len(unit['devices'])} devices"
                     + (f" {regs}" if regs else ""))
    lines.append(f"IOMMU groups: {len(rep['iommu_groups']) or 'none'}")
    for group in rep["iommu_groups"]:
        lines.append(f"  group {group['group']} ({group['type']})")
        for dev in group["devices"]:
            ids = f" {dev['vendor'][2:]}:{dev['device'][2:]}" if dev.get("vendor") else ""
            cdev = f" {dev['vfio_cdev']}" if dev["vfio_cdev"] else ""
            lines.append(f"    {dev['address']}{ids} driver={dev['driver'] or '-'}"
                         f" iommu={dev['iommu'] or '-'}{cdev}")
    lines.append(f"VFIO cdevs: {', '.join(rep['vfio_cdevs']) or 'none'}")
    for title, key in (("backends", "backends"), ("test groups", "test_groups")):
        lines.append(f"{title}:")
        for name, verdict in rep[key].items():
            why = f" ({verdict['reason']})" if verdict["reason"] else ""
            lines.append(f"  {name}: {_yes(verdict['can_run'])}{why}")
    return "\n".join(lines)


def main(spec: str | None, as_json: bool) -> int:
    """``iommufd-harness probe``: print the report; 2 with a one-line error on failure."""
    try:
        rep = probe(spec)
    except (ProbeError, BackendError, OSError, ValueError) as exc:
        print(f"iommufd-harness probe: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(rep, indent=2, sort_keys=True) if as_json else render(rep))
    return 0
