"""The hardware group: iommufd on a real (or emulated) IOMMU unit through a VFIO device.

GET_HW_INFO is decoded and checked against what the unit's driver told the kernel
log and sysfs; IOAS map / unmap runs through a real domain; HWPT_ALLOC paging,
dirty tracking, nesting parents and PASID attach run where the unit and the device
support them. Where they do not, the test first checks the kernel refuses (EOPNOTSUPP)
and then skips naming the missing capability bit.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from errno import EOPNOTSUPP

import pytest

import uapi_headers as u
from backends import Backend, Features
from harness import hwinfo, marks
from harness.helpers import Ioas, Iommufd, expect_errno, new_cmd
from harness.helpers.kmsg import KernelLog
from harness.helpers.selftest import hwpt_alloc
from harness.helpers.vfio import HwInfo, VfioDevice, get_hw_info
from harness.vfio_claim import ClaimedDevice

# On the host: the session claims the guest's devices and gives them back (vfio_claim).
pytestmark = [marks.requires("vfio_cdev"), marks.on_host]

PAGE_COUNT = 16


@pytest.fixture
def bound(backend: Backend, vfio_test_device: ClaimedDevice,
          vfio_iommufd: Iommufd) -> Iterator[tuple[VfioDevice, int]]:
    """The device's cdev bound to the iommufd: ``(cdev, dev_id)``."""
    cdev = VfioDevice.open(backend, vfio_test_device.cdev)
    try:
        yield cdev, cdev.bind(vfio_iommufd)
    finally:
        cdev.close()


@pytest.fixture
def info(vfio_iommufd: Iommufd, bound: tuple[VfioDevice, int]) -> HwInfo:
    """IOMMU_GET_HW_INFO of the bound device."""
    return get_hw_info(vfio_iommufd, bound[1])


def _boot_log(backend: Backend) -> list[str]:
    log = KernelLog(backend)
    log.close()
    return log.earlier


def _read(backend: Backend, path: str) -> str:
    fd = backend.open(path, 0)
    try:
        return backend.read(fd, 4096).decode().strip()
    finally:
        backend.close(fd)


def _vtd(info: HwInfo) -> hwinfo.VtdInfo | None:
    return hwinfo.VtdInfo.parse(info.data) if info.data_type == u.IOMMU_HW_INFO_TYPE_INTEL_VTD \
        else None


def _smmu(info: HwInfo) -> hwinfo.SmmuV3Info | None:
    return hwinfo.SmmuV3Info.parse(info.data) \
        if info.data_type == u.IOMMU_HW_INFO_TYPE_ARM_SMMUV3 else None


def test_get_hw_info_type(backend: Backend, info: HwInfo) -> None:
    expected = (u.IOMMU_HW_INFO_TYPE_INTEL_VTD if backend.has(Features.INTEL_VTD)
                else u.IOMMU_HW_INFO_TYPE_ARM_SMMUV3 if backend.has(Features.SMMUV3)
                else None)
    if expected is None:
        pytest.skip(f"{backend.spec}: the device is behind neither VT-d nor SMMUv3")
    assert info.data_type == expected, hwinfo.DATA_TYPES.get(info.data_type)
    size = {u.IOMMU_HW_INFO_TYPE_INTEL_VTD: "struct iommu_hw_info_vtd",
            u.IOMMU_HW_INFO_TYPE_ARM_SMMUV3: "struct iommu_hw_info_arm_smmuv3"}[expected]
    assert len(info.data) == u.ffi.sizeof(size)
    # Generic capabilities: only bits the uAPI defines.
    assert "0x" not in " ".join(hwinfo.capability_names(info.capabilities))


def test_vtd_registers_match_the_kernel_log(backend: Backend, info: HwInfo) -> None:
    vtd = _vtd(info)
    if vtd is None:
        pytest.skip("not behind VT-d (GET_HW_INFO type is not INTEL_VTD)")
    # intel-iommu logs "DMAR: dmarN: reg_base_addr ... ver ... cap C ecap E" per unit.
    lines = [m for m in (re.search(r"DMAR: (dmar\d+): .* cap ([0-9a-f]+) ecap ([0-9a-f]+)",
                                   line) for line in _boot_log(backend)) if m]
    assert lines, "no DMAR unit line in the boot log"
    units = {m.group(1): (int(m.group(2), 16), int(m.group(3), 16)) for m in lines}
    assert (vtd.cap_reg, vtd.ecap_reg) in units.values(), (
        f"GET_HW_INFO cap {vtd.cap_reg:x} ecap {vtd.ecap_reg:x}; the log says {units}")
    name = next(n for n, regs in units.items() if regs == (vtd.cap_reg, vtd.ecap_reg))
    sysfs = f"/sys/class/iommu/{name}/intel-iommu"
    assert int(_read(backend, f"{sysfs}/cap"), 16) == vtd.cap_reg
    assert int(_read(backend, f"{sysfs}/ecap"), 16) == vtd.ecap_reg
    cap = vtd.cap
    assert cap["SAGAW"] != 0, "no second-stage address width: no paging domain possible"
    assert cap["MGAW"] + 1 >= 39


def test_smmuv3_registers_match_the_kernel_log(backend: Backend, info: HwInfo) -> None:
    smmu = _smmu(info)
    if smmu is None:
        pytest.skip("not behind SMMUv3 (GET_HW_INFO type is not ARM_SMMUV3)")
    idr0, idr5 = smmu.fields(0), smmu.fields(5)
    assert idr0["S1P"] or idr0["S2P"], "neither translation stage"
    assert idr0["TTF"] & 2, "no AArch64 table format"
    assert smmu.architecture.startswith("SMMUv3.")
    # arm-smmu-v3 logs "ias N-bit, oas M-bit" from IDR5.OAS (the output address size).
    oas_bits = {0: 32, 1: 36, 2: 40, 3: 42, 4: 44, 5: 48, 6: 52}[idr5["OAS"]]
    logged = [m for m in (re.search(r"oas (\d+)-bit", line) for line in _boot_log(backend))
              if m]
    assert logged, "no arm-smmu-v3 'oas' line in the boot log"
    assert int(logged[0].group(1)) == oas_bits


def test_ioas_map_unmap_real_domain(backend: Backend, vfio_iommufd: Iommufd,
                                    bound: tuple[VfioDevice, int]) -> None:
    cdev, _ = bound
    ioas = Ioas.alloc(vfio_iommufd)
    hwpt_id = cdev.attach(ioas.id)
    assert hwpt_id != ioas.id, "the attach reports the automatic HWPT it made"
    length = PAGE_COUNT * backend.page_size
    buf = backend.alloc(length)
    iova = ioas.map(buf, length)
    ranges = ioas.iova_ranges()
    assert any(r.start <= iova and iova + length - 1 <= r.last for r in ranges.ranges)
    assert iova % ranges.alignment == 0
    assert ioas.unmap(iova, length) == length
    cdev.detach()


def test_hwpt_alloc_paging_and_replace(backend: Backend, vfio_iommufd: Iommufd,
                                       bound: tuple[VfioDevice, int]) -> None:
    cdev, dev_id = bound
    ioas = Ioas.alloc(vfio_iommufd)
    hwpt_id = hwpt_alloc(vfio_iommufd, dev_id, ioas.id)
    assert cdev.attach(hwpt_id) == hwpt_id
    auto = cdev.attach(ioas.id)  # replace with an automatic domain
    assert auto != hwpt_id
    assert cdev.attach(hwpt_id) == hwpt_id  # and back
    length = PAGE_COUNT * backend.page_size
    iova = ioas.map(backend.alloc(length), length)
    assert ioas.unmap(iova, length) == length
    cdev.detach()
    vfio_iommufd.destroy(hwpt_id)


def _missing_dirty_bit(info: HwInfo) -> str:
    vtd, smmu = _vtd(info), _smmu(info)
    if vtd is not None:
        return f"VT-d ecap SLADS={vtd.ecap['SLADS']}"
    if smmu is not None:
        return f"SMMUv3 IDR0.HTTU={smmu.fields(0)['HTTU']} (dirty needs 2)"
    return "IOMMU_HW_CAP_DIRTY_TRACKING"


def test_hwpt_dirty_tracking(backend: Backend, vfio_iommufd: Iommufd,
                             bound: tuple[VfioDevice, int], info: HwInfo) -> None:
    cdev, dev_id = bound
    ioas = Ioas.alloc(vfio_iommufd)
    flags = u.IOMMU_HWPT_ALLOC_DIRTY_TRACKING
    if not info.capabilities & u.IOMMU_HW_CAP_DIRTY_TRACKING:
        with expect_errno(EOPNOTSUPP):
            hwpt_alloc(vfio_iommufd, dev_id, ioas.id, flags)
        pytest.skip(f"no dirty tracking: IOMMU_HW_CAP_DIRTY_TRACKING clear "
                    f"({_missing_dirty_bit(info)}); HWPT_ALLOC refused it with EOPNOTSUPP")
    hwpt_id = hwpt_alloc(vfio_iommufd, dev_id, ioas.id, flags)
    cdev.attach(hwpt_id)
    vfio_iommufd.ioctl(u.IOMMU_HWPT_SET_DIRTY_TRACKING, new_cmd(
        "iommu_hwpt_set_dirty_tracking",
        {"hwpt_id": hwpt_id, "flags": u.IOMMU_HWPT_DIRTY_TRACKING_ENABLE}))
    length = PAGE_COUNT * backend.page_size
    iova = ioas.map(backend.alloc(length), length)
    bitmap = backend.alloc(backend.page_size)
    vfio_iommufd.ioctl(u.IOMMU_HWPT_GET_DIRTY_BITMAP, new_cmd(
        "iommu_hwpt_get_dirty_bitmap", {"hwpt_id": hwpt_id, "iova": iova, "length": length,
                                        "page_size": backend.page_size, "data": bitmap}))
    # Nothing did DMA: no page may be dirty.
    assert backend.peek(bitmap, PAGE_COUNT // 8) == bytes(PAGE_COUNT // 8)
    cdev.detach()


def _nesting(info: HwInfo) -> tuple[bool, str]:
    vtd, smmu = _vtd(info), _smmu(info)
    if vtd is not None:
        return bool(vtd.ecap["NEST"]), f"VT-d ecap NEST={vtd.ecap['NEST']}"
    if smmu is not None:
        idr0 = smmu.fields(0)
        return bool(idr0["S1P"] and idr0["S2P"]), \
            f"SMMUv3 IDR0.S1P={idr0['S1P']} S2P={idr0['S2P']} (nesting needs both)"
    return False, "no VT-d or SMMUv3 unit"


def test_hwpt_alloc_nest_parent(backend: Backend, vfio_iommufd: Iommufd,
                                bound: tuple[VfioDevice, int], info: HwInfo) -> None:
    cdev, dev_id = bound
    ioas = Ioas.alloc(vfio_iommufd)
    supported, bits = _nesting(info)
    flags = u.IOMMU_HWPT_ALLOC_NEST_PARENT
    if not supported:
        with expect_errno(EOPNOTSUPP):
            hwpt_alloc(vfio_iommufd, dev_id, ioas.id, flags)
        pytest.skip(f"no nesting: {bits}; HWPT_ALLOC NEST_PARENT refused with EOPNOTSUPP")
    parent = hwpt_alloc(vfio_iommufd, dev_id, ioas.id, flags)
    assert cdev.attach(parent) == parent
    length = PAGE_COUNT * backend.page_size
    iova = ioas.map(backend.alloc(length), length)
    assert ioas.unmap(iova, length) == length
    cdev.detach()


def test_pasid_attach(vfio_iommufd: Iommufd, bound: tuple[VfioDevice, int],
                      info: HwInfo) -> None:
    cdev, dev_id = bound
    if info.max_pasid_log2 == 0:
        pytest.skip("the device has no PASID capability (GET_HW_INFO max_pasid_log2 0)")
    ioas = Ioas.alloc(vfio_iommufd)
    hwpt_id = hwpt_alloc(vfio_iommufd, dev_id, ioas.id, u.IOMMU_HWPT_ALLOC_PASID)
    cdev.attach(hwpt_id)
    assert cdev.attach(hwpt_id, pasid=1) == hwpt_id
    cdev.detach(pasid=1)
    cdev.detach()
