"""GET_HW_INFO blob decoding, on register values QEMU's emulated units report
(the guests' boot logs: `DMAR: dmar0: ... cap d2008c22260206 ecap f00f4a`)."""

from __future__ import annotations

import struct

import uapi_headers as u
from harness import hwinfo

QEMU_VTD_CAP = 0xD2008C22260206
# QEMU 10.0.2's default intel-iommu (the x86_64 guest's probe, dmar0/intel-iommu/cap)
QEMU10_VTD_CAP = 0xD2008C222F0606
QEMU_VTD_ECAP_PLAIN = 0xF00F4A
QEMU_VTD_ECAP_SCALABLE_PASID = 0x490080F00F4A


def _vtd_blob(cap: int, ecap: int, flags: int = 0) -> bytes:
    return struct.pack("<IIQQ", flags, 0, cap, ecap)


def test_vtd_cap_fields() -> None:
    info = hwinfo.VtdInfo.parse(_vtd_blob(QEMU_VTD_CAP, QEMU_VTD_ECAP_PLAIN))
    cap = info.cap
    assert cap["ND"] == 6            # 2^(4+2*6) = 65536 domains
    assert cap["SAGAW"] == 0b00010   # bit 1: 39-bit, 3-level tables
    assert cap["MGAW"] + 1 == 39
    assert cap["FRO"] * 16 == 0x220
    assert cap["NFR"] + 1 == 1
    assert cap["PSI"] == 1 and cap["CM"] == 0
    assert not info.errata_772415


def test_vtd_cap_of_qemu_10_has_48_bit_addresses() -> None:
    cap = hwinfo.VtdInfo.parse(_vtd_blob(QEMU10_VTD_CAP, QEMU_VTD_ECAP_PLAIN)).cap
    assert cap["MGAW"] + 1 == 48
    assert cap["SAGAW"] == 0b00110   # 39-bit (3-level) and 48-bit (4-level) tables


def test_vtd_ecap_fields_plain_and_scalable() -> None:
    plain = hwinfo.VtdInfo.parse(_vtd_blob(QEMU_VTD_CAP, QEMU_VTD_ECAP_PLAIN)).ecap
    assert (plain["QI"], plain["IR"], plain["PT"], plain["EIM"]) == (1, 1, 1, 0)
    assert plain["IRO"] * 16 == 0xF0 and plain["MHMV"] == 0xF
    assert plain["SMTS"] == plain["PASID"] == plain["NEST"] == plain["SLADS"] == 0
    scalable = hwinfo.VtdInfo.parse(_vtd_blob(QEMU_VTD_CAP, QEMU_VTD_ECAP_SCALABLE_PASID)).ecap
    assert (scalable["SMTS"], scalable["SSTS"], scalable["PASID"], scalable["SRS"]) == \
        (1, 1, 1, 1)
    assert scalable["NEST"] == scalable["SLADS"] == 0


def test_vtd_errata_flag() -> None:
    info = hwinfo.VtdInfo.parse(_vtd_blob(0, 0, u.IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17))
    assert info.errata_772415


def test_smmuv3_fields() -> None:
    # QEMU 10.0 virt SMMUv3 IDR0 (both stages); IDR5 48-bit OAS with 4K and 64K granules
    idr = (0x0D44101B, 0x00E73D10, 0, 0x00000400, 0, 0x00000055)
    blob = struct.pack("<II6III", 0, 0, *idr, 0x0, 0x1)
    info = hwinfo.SmmuV3Info.parse(blob)
    idr0 = info.fields(0)
    assert (idr0["S1P"], idr0["S2P"], idr0["TTF"]) == (1, 1, 2)
    assert idr0["HTTU"] == 0 and idr0["ASID16"] == 1 and idr0["VMID16"] == 1
    assert info.fields(3)["RIL"] == 1
    idr5 = info.fields(5)
    assert (idr5["OAS"], idr5["GRAN4K"], idr5["GRAN64K"], idr5["GRAN16K"]) == (5, 1, 1, 0)
    assert info.architecture == "SMMUv3.1"
    assert info.iidr_fields["ProductID"] == 0


def test_capability_names() -> None:
    caps = u.IOMMU_HW_CAP_DIRTY_TRACKING | u.IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED | 0x100
    assert hwinfo.capability_names(caps) == ["DIRTY_TRACKING", "PCI_ATS_NOT_SUPPORTED",
                                             "0x100"]
