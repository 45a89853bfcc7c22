"""IOMMU_GET_HW_INFO's driver blobs decoded into named register fields.

INTEL_VTD hands out the unit's Capability and Extended Capability registers, ARM_SMMUV3
its ID registers IDR0-5, IIDR and AIDR. Field positions follow the VT-d and SMMUv3
architecture specifications (as drivers/iommu/intel/iommu.h and
arm-smmu-v3/arm-smmu-v3.h read them). Tests name a missing capability by these field
names when they skip.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import uapi_headers as u


@dataclass(frozen=True)
class Field:
    """A bit field of a register: bits ``lo`` .. ``hi`` inclusive."""

    name: str
    hi: int
    lo: int
    meaning: str

    def get(self, value: int) -> int:
        """The field's value in ``value``."""
        return (value >> self.lo) & ((1 << (self.hi - self.lo + 1)) - 1)


def _bit(name: str, bit: int, meaning: str) -> Field:
    return Field(name, bit, bit, meaning)


VTD_CAP = (
    Field("ND", 2, 0, "number of domains supported (encoded)"),
    _bit("AFL", 3, "advanced fault logging"),
    _bit("RWBF", 4, "required write-buffer flushing"),
    _bit("PLMR", 5, "protected low-memory region"),
    _bit("PHMR", 6, "protected high-memory region"),
    _bit("CM", 7, "caching mode"),
    Field("SAGAW", 12, 8, "supported second-stage address widths"),
    Field("MGAW", 21, 16, "maximum guest address width - 1"),
    _bit("ZLR", 22, "zero-length read"),
    Field("FRO", 33, 24, "fault-recording register offset / 16"),
    Field("SSPS", 37, 34, "second-stage large page support"),
    _bit("PSI", 39, "page-selective invalidation"),
    Field("NFR", 47, 40, "number of fault-recording registers - 1"),
    Field("MAMV", 53, 48, "maximum address mask value"),
    _bit("DWD", 54, "write draining"),
    _bit("DRD", 55, "read draining"),
    _bit("FS1GP", 56, "first-stage 1 GiB pages"),
    _bit("PI", 59, "posted interrupts"),
    _bit("FS5LP", 60, "first-stage 5-level paging"),
    _bit("ESIRTPS", 62, "enhanced set interrupt remap table pointer"),
    _bit("ESRTPS", 63, "enhanced set root table pointer"),
)

VTD_ECAP = (
    _bit("C", 0, "page-walk coherency"),
    _bit("QI", 1, "queued invalidation"),
    _bit("DT", 2, "device TLB (ATS)"),
    _bit("IR", 3, "interrupt remapping"),
    _bit("EIM", 4, "extended interrupt mode (x2APIC)"),
    _bit("PT", 6, "pass through"),
    _bit("SC", 7, "snoop control"),
    Field("IRO", 17, 8, "IOTLB register offset / 16"),
    Field("MHMV", 23, 20, "maximum handle mask value"),
    _bit("MTS", 25, "memory type support"),
    _bit("NEST", 26, "nested translation"),
    _bit("PRS", 29, "page requests"),
    _bit("ERS", 30, "execute requests"),
    _bit("SRS", 31, "supervisor requests"),
    _bit("NWFS", 33, "no write flag"),
    _bit("EAFS", 34, "extended accessed flag"),
    Field("PSS", 39, 35, "PASID size - 1"),
    _bit("PASID", 40, "process address space IDs"),
    _bit("DIT", 41, "device-TLB invalidation throttle"),
    _bit("PDS", 42, "page-request drain"),
    _bit("SMTS", 43, "scalable mode translation"),
    _bit("SLADS", 45, "second-stage accessed/dirty (dirty tracking)"),
    _bit("SSTS", 46, "second-stage translation"),
    _bit("FSTS", 47, "first-stage translation"),
    _bit("SMPWC", 48, "scalable-mode page-walk coherency"),
    _bit("RPS", 49, "RID-PASID"),
    _bit("PMS", 51, "performance monitoring"),
)

SMMUV3_IDR = {
    0: (
        _bit("S2P", 0, "stage 2 translation"),
        _bit("S1P", 1, "stage 1 translation"),
        Field("TTF", 3, 2, "translation table formats (2: AArch64)"),
        _bit("COHACC", 4, "coherent access"),
        _bit("BTM", 5, "broadcast TLB maintenance"),
        Field("HTTU", 7, 6, "hardware access/dirty flag updates (2: dirty)"),
        _bit("HYP", 9, "hypervisor stage 1 contexts"),
        _bit("ATS", 10, "PCIe ATS"),
        _bit("ASID16", 12, "16-bit ASIDs"),
        _bit("MSI", 13, "MSI for queues"),
        _bit("SEV", 14, "WFE wake-up events"),
        _bit("PRI", 16, "page request interface"),
        _bit("VMID16", 18, "16-bit VMIDs"),
        _bit("CD2L", 19, "2-level context descriptor tables"),
        Field("TTENDIAN", 22, 21, "table endianness"),
        Field("STALL_MODEL", 25, 24, "stall model"),
        Field("ST_LEVEL", 28, 27, "stream table levels"),
    ),
    1: (
        Field("SIDSIZE", 5, 0, "stream ID bits"),
        Field("SSIDSIZE", 10, 6, "substream ID (PASID) bits"),
        Field("PRIQS", 15, 11, "PRI queue size (log2)"),
        Field("EVENTQS", 20, 16, "event queue size (log2)"),
        Field("CMDQS", 25, 21, "command queue size (log2)"),
        _bit("REL", 28, "relative base addresses"),
        _bit("QUEUES_PRESET", 29, "fixed queue addresses"),
        _bit("TABLES_PRESET", 30, "fixed table addresses"),
    ),
    3: (
        _bit("HAD", 2, "hierarchical attribute disable"),
        _bit("FWB", 8, "stage 2 forced write-back"),
        _bit("RIL", 10, "range invalidation"),
        Field("BBML", 12, 11, "break-before-make level"),
    ),
    5: (
        Field("OAS", 2, 0, "output address size (5: 48 bits)"),
        _bit("GRAN4K", 4, "4 KiB granule"),
        _bit("GRAN16K", 5, "16 KiB granule"),
        _bit("GRAN64K", 6, "64 KiB granule"),
        Field("VAX", 11, 10, "virtual address extension"),
        Field("STALL_MAX", 31, 16, "maximum outstanding stalls"),
    ),
}

HW_CAPABILITIES = {
    u.IOMMU_HW_CAP_DIRTY_TRACKING: "DIRTY_TRACKING",
    u.IOMMU_HW_CAP_PCI_PASID_EXEC: "PCI_PASID_EXEC",
    u.IOMMU_HW_CAP_PCI_PASID_PRIV: "PCI_PASID_PRIV",
    u.IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED: "PCI_ATS_NOT_SUPPORTED",
}

DATA_TYPES = {
    u.IOMMU_HW_INFO_TYPE_NONE: "NONE",
    u.IOMMU_HW_INFO_TYPE_INTEL_VTD: "INTEL_VTD",
    u.IOMMU_HW_INFO_TYPE_ARM_SMMUV3: "ARM_SMMUV3",
    u.IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV: "TEGRA241_CMDQV",
    u.IOMMU_HW_INFO_TYPE_AMD: "AMD",
}


def decode(fields: tuple[Field, ...], value: int) -> dict[str, int]:
    """``{field name: value}`` of every field of a register."""
    return {f.name: f.get(value) for f in fields}


@dataclass(frozen=True)
class VtdInfo:
    """The INTEL_VTD blob: flags, cap_reg, ecap_reg."""

    flags: int
    cap_reg: int
    ecap_reg: int

    @classmethod
    def parse(cls, data: bytes) -> VtdInfo:
        """From struct iommu_hw_info_vtd's bytes."""
        flags, _reserved, cap, ecap = struct.unpack_from("<IIQQ", data)
        return cls(flags, cap, ecap)

    @property
    def cap(self) -> dict[str, int]:
        """The decoded Capability register."""
        return decode(VTD_CAP, self.cap_reg)

    @property
    def ecap(self) -> dict[str, int]:
        """The decoded Extended Capability register."""
        return decode(VTD_ECAP, self.ecap_reg)

    @property
    def errata_772415(self) -> bool:
        """IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17: read-only mappings must not be
        dirty tracked on this part."""
        return bool(self.flags & u.IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17)


@dataclass(frozen=True)
class SmmuV3Info:
    """The ARM_SMMUV3 blob: flags, idr[6], iidr, aidr."""

    flags: int
    idr: tuple[int, ...]
    iidr: int
    aidr: int

    @classmethod
    def parse(cls, data: bytes) -> SmmuV3Info:
        """From struct iommu_hw_info_arm_smmuv3's bytes."""
        values = struct.unpack_from("<II6III", data)
        return cls(values[0], tuple(values[2:8]), values[8], values[9])

    def fields(self, n: int) -> dict[str, int]:
        """The decoded IDR``n`` (0, 1, 3 and 5 have fields the tests use)."""
        return decode(SMMUV3_IDR[n], self.idr[n])

    @property
    def architecture(self) -> str:
        """AIDR as ``SMMUv3.x`` (ArchMajorRev 0 is SMMUv3; ArchMinorRev is x)."""
        major, minor = (self.aidr >> 4) & 0xF, self.aidr & 0xF
        return f"SMMUv{3 + major}.{minor}"

    @property
    def iidr_fields(self) -> dict[str, int]:
        """IIDR: implementer, revision, variant, product id."""
        return {"Implementer": self.iidr & 0xFFF, "Revision": (self.iidr >> 12) & 0xF,
                "Variant": (self.iidr >> 16) & 0xF, "ProductID": self.iidr >> 20}


def capability_names(capabilities: int) -> list[str]:
    """The names of the set IOMMU_HW_CAP_* bits (unknown bits as hex)."""
    names = [name for bit, name in HW_CAPABILITIES.items() if capabilities & bit]
    unknown = capabilities & ~sum(HW_CAPABILITIES)
    return names + ([hex(unknown)] if unknown else [])
