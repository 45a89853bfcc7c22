"""backends.kernel.vfio_devices on a fake sysfs: refusals name their reason before any
file is written, records survive on disk, restore_pending leaves live runs alone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backends.kernel import vfio_devices as vd

BDF = "0000:00:04.0"


def _device(root: Path, bdf: str, *, klass: str = "0x020000", driver: str | None = "igb",
            group: str | None = "7") -> Path:
    dev = root / "devices" / bdf
    dev.mkdir(parents=True)
    (dev / "class").write_text(klass + "\n")
    (dev / "vendor").write_text("0x8086\n")
    (dev / "device").write_text("0x10c9\n")
    (dev / "driver_override").write_text("(null)\n")
    if driver:
        drv = root / "drivers" / driver
        drv.mkdir(parents=True, exist_ok=True)
        (dev / "driver").symlink_to(drv)
    if group:
        grp = root / "groups" / group / "devices"
        grp.mkdir(parents=True, exist_ok=True)
        (grp / bdf).symlink_to(dev)
        (dev / "iommu_group").symlink_to(grp.parent)
    return dev


@pytest.fixture
def sysfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "pci"
    monkeypatch.setattr(vd, "SYSFS_PCI", str(root))
    monkeypatch.setenv(vd.RECORD_DIR_ENV, str(tmp_path / "records"))
    return root


def test_bdf_forms() -> None:
    assert vd.normalize_bdf("00:04.0") == BDF
    assert vd.normalize_bdf("0000:00:04.0".upper()) == BDF
    with pytest.raises(ValueError, match="not a PCI address"):
        vd.normalize_bdf("eth0")


def test_refusals_name_their_reason(sysfs: Path) -> None:
    assert vd.refusal(BDF, allow_bind=True) == f"no PCI device {BDF}"
    _device(sysfs, "0000:00:00.0", klass="0x060000", driver=None)
    assert vd.refusal("0000:00:00.0", allow_bind=True) == "0000:00:00.0 is a host bridge"
    _device(sysfs, "0000:00:05.0", group=None)
    assert "not behind an IOMMU" in str(vd.refusal("0000:00:05.0", allow_bind=True))
    _device(sysfs, BDF)
    assert "needs the explicit opt-in" in str(vd.refusal(BDF, allow_bind=False))
    assert vd.refusal(BDF, allow_bind=True) is None


def test_a_shared_group_is_refused(sysfs: Path) -> None:
    _device(sysfs, BDF)
    _device(sysfs, "0000:00:04.1", driver="ahci", group="7")
    reason = str(vd.refusal(BDF, allow_bind=True))
    assert "shares its IOMMU group with 0000:00:04.1, bound to ahci" in reason


def test_an_up_interface_and_a_console_port_are_in_use(sysfs: Path) -> None:
    dev = _device(sysfs, BDF)
    net = dev / "net" / "eth0"
    net.mkdir(parents=True)
    (net / "flags").write_text("0x1003\n")
    assert vd.refusal(BDF, allow_bind=True) == f"{BDF} is in use: network interface eth0 is up"
    (net / "flags").write_text("0x1002\n")
    assert vd.refusal(BDF, allow_bind=True) is None
    port = dev / "virtio1" / "virtio-ports" / "vport1p1"
    port.mkdir(parents=True)
    (port / "name").write_text("org.iommufd.agent\n")
    assert "virtio-serial port org.iommufd.agent" in str(vd.refusal(BDF, allow_bind=True))


def test_refused_claim_writes_nothing(sysfs: Path, tmp_path: Path) -> None:
    dev = _device(sysfs, BDF)
    with pytest.raises(vd.DeviceRefused, match="opt-in"):
        vd.claim([BDF], allow_bind=False)
    assert (dev / "driver_override").read_text() == "(null)\n"
    assert not (tmp_path / "records").exists()


def test_records_and_restore_pending_skip_live_runs(sysfs: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    live = vd.Binding(BDF, "igb", None, os.getppid(), 0.0)
    vd.write_record(live)
    assert vd.read_records() == [live]
    restored: list[vd.Binding] = []
    monkeypatch.setattr(vd, "restore", restored.append)
    assert vd.restore_pending() == [] and restored == []  # its process still runs
    dead = vd.Binding(BDF, "igb", None, 2**22 + 12345, 0.0)
    vd.write_record(dead)
    assert vd.restore_pending() == [dead] and restored == [dead]
