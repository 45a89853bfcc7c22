"""iommufd-harness probe: verdicts from facts, rendering, and its command line."""

from __future__ import annotations

from typing import Any

import pytest

from harness import cli, probe

EDU = {"address": "0000:00:03.0", "subsystem": "pci", "driver": "vfio-pci",
       "vendor": "0x1234", "device": "0x11e8", "class": "0x00ff00", "driver_override":
       "vfio-pci", "iommu": "dmar0", "vfio_cdev": "/dev/vfio/devices/vfio0"}
IGB = {**EDU, "address": "0000:00:04.0", "driver": "igb", "vendor": "0x8086",
       "device": "0x10c9", "driver_override": None, "vfio_cdev": None}


def _facts(*, features: list[str], error: str | None = None,
           devices: tuple[dict[str, Any], ...] = (EDU, IGB)) -> dict[str, Any]:
    return {
        "machine": "x86_64", "kernel_release": "7.3.4",
        "iommufd": {"path": "/dev/iommu", "present": error is None, "features": features,
                    "error": error},
        "fault_injection": {"fail_nth": True, "failslab": True, "fail_page_alloc": True},
        "iommu_units": [{"name": "dmar0", "kind": "intel_vtd", "devices": [
            d["address"] for d in devices], "cap": "d2008c22260206", "ecap": "f00f4a"}],
        "iommu_groups": [{"group": n, "type": "DMA", "devices": [d]}
                         for n, d in enumerate(devices)],
        "vfio_cdevs": [d["vfio_cdev"] for d in devices if d["vfio_cdev"]],
    }


def test_a_guest_with_edu_can_run_every_group() -> None:
    rep = probe.report(_facts(features=["selftest", "fail_nth", "vfio_cdev"]),
                       where="guest", host=False)
    assert all(v["can_run"] for v in rep["test_groups"].values()), rep["test_groups"]
    assert set(rep["backends"]) == {"mock", "kernel"}  # no qemu inside a guest


def test_verdicts_name_what_is_missing() -> None:
    facts = _facts(features=[], devices=(IGB,))
    groups = probe.group_verdicts(facts)
    assert "CONFIG_IOMMUFD_TEST" in groups["iommufd"]["reason"]
    assert groups["vfio"]["reason"] == "no device bound to vfio-pci with a cdev behind an IOMMU"
    assert "edu" in groups["dma_proof"]["reason"]
    gone = probe.group_verdicts(_facts(features=[], error="no /dev/iommu on kernel 6.1"))
    assert all(v["reason"] == "no /dev/iommu on kernel 6.1" for k, v in gone.items()
               if k != "iommufd.fail_nth")


def test_render_lists_units_groups_and_cdevs() -> None:
    text = probe.render(probe.report(_facts(features=["vfio_cdev"]), where="guest",
                                     host=False))
    assert "dmar0 (intel_vtd) 2 devices cap=d2008c22260206 ecap=f00f4a" in text
    assert "0000:00:03.0 1234:11e8 driver=vfio-pci iommu=dmar0 /dev/vfio/devices/vfio0" in text
    assert "0000:00:04.0 8086:10c9 driver=igb" in text


def test_cli_refuses_a_bad_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["probe", "--backend", "bogus"]) == 2
    assert "expected kernel, qemu:x86_64 or qemu:aarch64" in capsys.readouterr().err
