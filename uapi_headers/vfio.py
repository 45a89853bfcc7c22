"""The parts of linux/vfio.h (Linux 7.3.4) that iommufd users need, as cffi declarations.

Three groups: the VFIO device cdev ioctls that bind a device to an iommufd and attach it
(RID or PASID) to an IOAS/HWPT; the device and region info a test needs to reach a
device's config space and BARs (its DMA engine); and the VFIO type1 container ABI that
iommufd emulates (``IOMMU_VFIO_IOAS`` / vfio_compat) and that the kernel's selftests drive
on /dev/iommu.
The rest of vfio.h (IRQs, migration, device features, sPAPR) is left out.
"""

from uapi_headers._ffi import declare as _declare
from uapi_headers._ffi import io_request as _io_request

_CDEF = """
/* header of every capability in a VFIO info chain; offsets count from the info start */
struct vfio_info_cap_header {
    uint16_t id;
    uint16_t version;
    uint32_t next;                    /* offset of the next capability, 0 ends the chain */
};

/* VFIO_DEVICE_BIND_IOMMUFD: bind a cdev-opened device to an iommufd */
struct vfio_device_bind_iommufd {
    uint32_t argsz;
    uint32_t flags;
    int32_t iommufd;
    uint32_t out_devid;               /* the dev_id for IOMMUFD commands */
    uint64_t token_uuid_ptr;          /* read only with VFIO_DEVICE_BIND_FLAG_TOKEN */
};

/* VFIO_DEVICE_ATTACH_IOMMUFD_PT: attach (or replace) the RID or one PASID */
struct vfio_device_attach_iommufd_pt {
    uint32_t argsz;
    uint32_t flags;
    uint32_t pt_id;                   /* in: IOAS or HWPT; out: the attached HWPT */
    uint32_t pasid;                   /* read only with VFIO_DEVICE_ATTACH_PASID */
};

/* VFIO_DEVICE_DETACH_IOMMUFD_PT: back to blocking DMA */
struct vfio_device_detach_iommufd_pt {
    uint32_t argsz;
    uint32_t flags;
    uint32_t pasid;                   /* read only with VFIO_DEVICE_DETACH_PASID */
};

/* VFIO_DEVICE_GET_INFO: what kind of device, how many regions and interrupts */
struct vfio_device_info {
    uint32_t argsz;
    uint32_t flags;                   /* VFIO_DEVICE_FLAGS_* */
    uint32_t num_regions;
    uint32_t num_irqs;
    uint32_t cap_offset;              /* first capability, with VFIO_DEVICE_FLAGS_CAPS */
    uint32_t pad;
};

/* VFIO_DEVICE_GET_REGION_INFO: where region `index` sits in the device fd */
struct vfio_region_info {
    uint32_t argsz;
    uint32_t flags;                   /* VFIO_REGION_INFO_FLAG_* */
    uint32_t index;                   /* in: which region */
    uint32_t cap_offset;
    uint64_t size;
    uint64_t offset;                  /* pread/pwrite/mmap offset of the region */
};

/* VFIO_IOMMU_GET_INFO on a type1 container */
struct vfio_iommu_type1_info {
    uint32_t argsz;
    uint32_t flags;
    uint64_t iova_pgsizes;
    uint32_t cap_offset;              /* first capability, with VFIO_IOMMU_INFO_CAPS */
    uint32_t pad;
};

/* one inclusive IOVA interval of the IOVA_RANGE capability */
struct vfio_iova_range {
    uint64_t start;
    uint64_t end;
};

/* capability VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE */
struct vfio_iommu_type1_info_cap_iova_range {
    struct vfio_info_cap_header header;
    uint32_t nr_iovas;
    uint32_t reserved;
    struct vfio_iova_range iova_ranges[];
};

/* capability VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION */
struct vfio_iommu_type1_info_cap_migration {
    struct vfio_info_cap_header header;
    uint32_t flags;
    uint64_t pgsize_bitmap;
    uint64_t max_dirty_bitmap_size;
};

/* capability VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL */
struct vfio_iommu_type1_info_dma_avail {
    struct vfio_info_cap_header header;
    uint32_t avail;
};

/* VFIO_IOMMU_MAP_DMA */
struct vfio_iommu_type1_dma_map {
    uint32_t argsz;
    uint32_t flags;
    uint64_t vaddr;
    uint64_t iova;
    uint64_t size;
};

/* a user dirty bitmap: one bit per pgsize bytes */
struct vfio_bitmap {
    uint64_t pgsize;
    uint64_t size;                    /* bytes of bitmap */
    uint64_t *data;
};

/* VFIO_IOMMU_UNMAP_DMA; data[] carries a struct vfio_bitmap with GET_DIRTY_BITMAP */
struct vfio_iommu_type1_dma_unmap {
    uint32_t argsz;
    uint32_t flags;
    uint64_t iova;
    uint64_t size;                    /* out: bytes unmapped */
    uint8_t data[];
};

/* VFIO_IOMMU_DIRTY_PAGES; data[] carries a vfio_iommu_type1_dirty_bitmap_get */
struct vfio_iommu_type1_dirty_bitmap {
    uint32_t argsz;
    uint32_t flags;
    uint8_t data[];
};

/* the range and bitmap of VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP */
struct vfio_iommu_type1_dirty_bitmap_get {
    uint64_t iova;
    uint64_t size;
    struct vfio_bitmap bitmap;
};
"""

_declare(_CDEF)

# ---- macros ----
VFIO_API_VERSION: int = 0
"""What VFIO_GET_API_VERSION returns."""

# Extension ids for VFIO_CHECK_EXTENSION / VFIO_SET_IOMMU.
VFIO_TYPE1_IOMMU: int = 1
VFIO_SPAPR_TCE_IOMMU: int = 2
VFIO_TYPE1v2_IOMMU: int = 3
VFIO_DMA_CC_IOMMU: int = 4
VFIO_EEH: int = 5
__VFIO_RESERVED_TYPE1_NESTING_IOMMU: int = 6  # retired nesting type, still probed by compat
VFIO_SPAPR_TCE_v2_IOMMU: int = 7
VFIO_NOIOMMU_IOMMU: int = 8
VFIO_UNMAP_ALL: int = 9
VFIO_UPDATE_VADDR: int = 10

VFIO_TYPE: int = ord(";")
"""VFIO shares the ioctl type byte with iommufd; its numbers start at VFIO_BASE."""
VFIO_BASE: int = 100

# vfio_device_bind_iommufd.flags
VFIO_DEVICE_BIND_FLAG_TOKEN: int = 1 << 0
# vfio_device_attach_iommufd_pt.flags / vfio_device_detach_iommufd_pt.flags
VFIO_DEVICE_ATTACH_PASID: int = 1 << 0
VFIO_DEVICE_DETACH_PASID: int = 1 << 0

# vfio_device_info.flags
VFIO_DEVICE_FLAGS_RESET: int = 1 << 0
VFIO_DEVICE_FLAGS_PCI: int = 1 << 1
VFIO_DEVICE_FLAGS_CAPS: int = 1 << 7
# vfio_region_info.flags
VFIO_REGION_INFO_FLAG_READ: int = 1 << 0
VFIO_REGION_INFO_FLAG_WRITE: int = 1 << 1
VFIO_REGION_INFO_FLAG_MMAP: int = 1 << 2
VFIO_REGION_INFO_FLAG_CAPS: int = 1 << 3
# region indexes of a vfio-pci device: BARs 0-5, the expansion ROM, then config space
VFIO_PCI_BAR0_REGION_INDEX: int = 0
VFIO_PCI_ROM_REGION_INDEX: int = 6
VFIO_PCI_CONFIG_REGION_INDEX: int = 7
# vfio_iommu_type1_info.flags
VFIO_IOMMU_INFO_PGSIZES: int = 1 << 0
VFIO_IOMMU_INFO_CAPS: int = 1 << 1
# capability ids of the type1 info chain (vfio_info_cap_header.id)
VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE: int = 1
VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION: int = 2
VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL: int = 3

# vfio_iommu_type1_dma_map.flags
VFIO_DMA_MAP_FLAG_READ: int = 1 << 0
VFIO_DMA_MAP_FLAG_WRITE: int = 1 << 1
VFIO_DMA_MAP_FLAG_VADDR: int = 1 << 2
# vfio_iommu_type1_dma_unmap.flags
VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP: int = 1 << 0
VFIO_DMA_UNMAP_FLAG_ALL: int = 1 << 1
VFIO_DMA_UNMAP_FLAG_VADDR: int = 1 << 2
# vfio_iommu_type1_dirty_bitmap.flags
VFIO_IOMMU_DIRTY_PAGES_FLAG_START: int = 1 << 0
VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP: int = 1 << 1
VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP: int = 1 << 2


def _io(name: str, n: int) -> int:
    return _io_request(name, VFIO_TYPE, VFIO_BASE + n)


# ---- ioctl request numbers: _IO(VFIO_TYPE, VFIO_BASE + n) ----
# on the container (with iommufd: the /dev/iommu fd in compat mode)
VFIO_GET_API_VERSION: int = _io("VFIO_GET_API_VERSION", 0)
VFIO_CHECK_EXTENSION: int = _io("VFIO_CHECK_EXTENSION", 1)
VFIO_SET_IOMMU: int = _io("VFIO_SET_IOMMU", 2)
VFIO_IOMMU_GET_INFO: int = _io("VFIO_IOMMU_GET_INFO", 12)
VFIO_IOMMU_MAP_DMA: int = _io("VFIO_IOMMU_MAP_DMA", 13)
VFIO_IOMMU_UNMAP_DMA: int = _io("VFIO_IOMMU_UNMAP_DMA", 14)
VFIO_IOMMU_ENABLE: int = _io("VFIO_IOMMU_ENABLE", 15)
VFIO_IOMMU_DISABLE: int = _io("VFIO_IOMMU_DISABLE", 16)
VFIO_IOMMU_DIRTY_PAGES: int = _io("VFIO_IOMMU_DIRTY_PAGES", 17)
# on a VFIO device cdev (/dev/vfio/devices/vfioN)
VFIO_DEVICE_GET_INFO: int = _io("VFIO_DEVICE_GET_INFO", 7)
VFIO_DEVICE_GET_REGION_INFO: int = _io("VFIO_DEVICE_GET_REGION_INFO", 8)
VFIO_DEVICE_RESET: int = _io("VFIO_DEVICE_RESET", 11)
VFIO_DEVICE_BIND_IOMMUFD: int = _io("VFIO_DEVICE_BIND_IOMMUFD", 18)
VFIO_DEVICE_ATTACH_IOMMUFD_PT: int = _io("VFIO_DEVICE_ATTACH_IOMMUFD_PT", 19)
VFIO_DEVICE_DETACH_IOMMUFD_PT: int = _io("VFIO_DEVICE_DETACH_IOMMUFD_PT", 20)
