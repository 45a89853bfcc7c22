"""drivers/iommu/iommufd/iommufd_test.h (Linux 7.3.4): the selftest ABI, as cffi declarations.

This is what a kernel built with CONFIG_IOMMUFD_TEST accepts through ``IOMMU_TEST_CMD``
(and what the in-Python mock implements): the op codes, ``struct iommu_test_cmd`` with its
per-op union members (``cmd.mock_domain.out_hwpt_id`` works as in C), the mock domain's
geometry and the driver-data types and structs of the mock IOMMU driver.
"""

from uapi_headers._ffi import declare as _declare
from uapi_headers._ffi import enumerators as _enumerators
from uapi_headers._ffi import io_request as _io_request
from uapi_headers.iommufd import IOMMUFD_CMD_BASE, IOMMUFD_TYPE

_CDEF = """
/* op codes of IOMMU_TEST_CMD (iommu_test_cmd.op) */
enum _anon_iommu_test_op {
    IOMMU_TEST_OP_ADD_RESERVED = 1,
    IOMMU_TEST_OP_MOCK_DOMAIN = 2,
    IOMMU_TEST_OP_MD_CHECK_MAP = 3,
    IOMMU_TEST_OP_MD_CHECK_REFS = 4,
    IOMMU_TEST_OP_CREATE_ACCESS = 5,
    IOMMU_TEST_OP_DESTROY_ACCESS_PAGES = 6,
    IOMMU_TEST_OP_ACCESS_PAGES = 7,
    IOMMU_TEST_OP_ACCESS_RW = 8,
    IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT = 9,
    IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE = 10,
    IOMMU_TEST_OP_ACCESS_REPLACE_IOAS = 11,
    IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS = 12,
    IOMMU_TEST_OP_DIRTY = 13,
    IOMMU_TEST_OP_MD_CHECK_IOTLB = 14,
    IOMMU_TEST_OP_TRIGGER_IOPF = 15,
    IOMMU_TEST_OP_DEV_CHECK_CACHE = 16,
    IOMMU_TEST_OP_TRIGGER_VEVENT = 17,
    IOMMU_TEST_OP_PASID_ATTACH = 18,
    IOMMU_TEST_OP_PASID_REPLACE = 19,
    IOMMU_TEST_OP_PASID_DETACH = 20,
    IOMMU_TEST_OP_PASID_CHECK_HWPT = 21,
    IOMMU_TEST_OP_DMABUF_GET = 22,
    IOMMU_TEST_OP_DMABUF_REVOKE = 23
};

/* mock page-table formats (iommu_hwpt_selftest.pagetable_type) */
enum _anon_mock_iommupt {
    MOCK_IOMMUPT_DEFAULT = 0,
    MOCK_IOMMUPT_HUGE = 1
};

/* geometry of a MOCK_IOMMUPT_DEFAULT domain: aperture [16 MiB, 2 GiB - 1], 2 KiB pages */
enum _anon_mock_domain {
    MOCK_APERTURE_START = 0x1000000,
    MOCK_APERTURE_LAST = 0x7fffffff,
    MOCK_PAGE_SIZE = 2048,
    MOCK_HUGE_PAGE_SIZE = 0x100000    /* 512 mock pages */
};

/* access_pages.flags */
enum _anon_mock_flags_access {
    MOCK_FLAGS_ACCESS_WRITE = 1,
    MOCK_FLAGS_ACCESS_SYZ = 0x10000
};

/* access_rw.flags */
enum _anon_mock_access_rw {
    MOCK_ACCESS_RW_WRITE = 1,
    MOCK_ACCESS_RW_SLOW_PATH = 4
};

/* create_access.flags */
enum _anon_mock_flags_access_create {
    MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES = 1
};

/* mock_domain_flags.dev_flags */
enum _anon_mock_flags_device {
    MOCK_FLAGS_DEVICE_NO_DIRTY = 1,
    MOCK_FLAGS_DEVICE_PASID = 4
};

/* the nested domain's mock IOTLB: entries 0..3 */
enum _anon_mock_nested_iotlb {
    MOCK_NESTED_DOMAIN_IOTLB_ID_MAX = 3,
    MOCK_NESTED_DOMAIN_IOTLB_NUM = 4
};

/* the mock device's cache: entries 0..3 */
enum _anon_mock_dev_cache {
    MOCK_DEV_CACHE_ID_MAX = 3,
    MOCK_DEV_CACHE_NUM = 4
};

/* IOMMU_TEST_CMD: common header, one op-specific member, then `last` */
struct iommu_test_cmd {
    uint32_t size;
    uint32_t op;
    uint32_t id;
    uint32_t __reserved;
    union {
        struct {
            uint64_t start;
            uint64_t length;
        } add_reserved;
        struct {
            uint32_t out_stdev_id;
            uint32_t out_hwpt_id;
            uint32_t out_idev_id;     /* an ordinary iommufd device ID */
        } mock_domain;
        struct {
            uint32_t out_stdev_id;
            uint32_t out_hwpt_id;
            uint32_t out_idev_id;
            uint32_t dev_flags;       /* MOCK_FLAGS_DEVICE_* */
        } mock_domain_flags;
        struct {
            uint32_t pt_id;
        } mock_domain_replace;
        struct {
            uint64_t iova;
            uint64_t length;
            uint64_t uptr;
        } check_map;
        struct {
            uint64_t length;
            uint64_t uptr;
            uint32_t refs;
        } check_refs;
        struct {
            uint32_t out_access_fd;
            uint32_t flags;
        } create_access;
        struct {
            uint32_t access_pages_id;
        } destroy_access_pages;
        struct {
            uint32_t flags;
            uint32_t out_access_pages_id;
            uint64_t iova;
            uint64_t length;
            uint64_t uptr;
        } access_pages;
        struct {
            uint64_t iova;
            uint64_t length;
            uint64_t uptr;
            uint32_t flags;
        } access_rw;
        struct {
            uint32_t limit;
        } memory_limit;
        struct {
            uint32_t ioas_id;
        } access_replace_ioas;
        struct {
            uint32_t flags;
            uint64_t iova;
            uint64_t length;
            uint64_t page_size;
            uint64_t uptr;
            uint64_t out_nr_dirty;
        } dirty;
        struct {
            uint32_t id;
            uint32_t iotlb;
        } check_iotlb;
        struct {
            uint32_t dev_id;
            uint32_t pasid;
            uint32_t grpid;
            uint32_t perm;
            uint64_t addr;
        } trigger_iopf;
        struct {
            uint32_t id;
            uint32_t cache;
        } check_dev_cache;
        struct {
            uint32_t dev_id;
        } trigger_vevent;
        struct {                      /* cmd.id is the selftest device (stdev) ID */
            uint32_t pasid;
            uint32_t pt_id;
        } pasid_attach;
        struct {
            uint32_t pasid;
            uint32_t pt_id;
        } pasid_replace;
        struct {
            uint32_t pasid;
        } pasid_detach;
        struct {
            uint32_t pasid;
            uint32_t hwpt_id;         /* 0: the PASID must be detached */
        } pasid_check;
        struct {
            uint32_t length;
            uint32_t open_flags;
        } dmabuf_get;
        struct {
            int32_t dmabuf_fd;
            uint32_t revoked;
        } dmabuf_revoke;
    };
    uint32_t last;                    /* ends the accepted minimum size */
};

/* GET_HW_INFO data for IOMMU_HW_INFO_TYPE_SELFTEST */
struct iommu_test_hw_info {
    uint32_t flags;
    uint32_t test_reg;                /* IOMMU_HW_INFO_SELFTEST_REGVAL */
};

/* nested HWPT data for IOMMU_HWPT_DATA_SELFTEST; iotlb ends the minimum size */
struct iommu_hwpt_selftest {
    uint32_t iotlb;
    uint32_t pagetable_type;          /* MOCK_IOMMUPT_* */
};

/* invalidation entry for IOMMU_HWPT_INVALIDATE_DATA_SELFTEST */
struct iommu_hwpt_invalidate_selftest {
    uint32_t flags;                   /* IOMMU_TEST_INVALIDATE_FLAG_ALL ignores iotlb_id */
    uint32_t iotlb_id;
};

/* vIOMMU data for IOMMU_VIOMMU_TYPE_SELFTEST: out_data echoes in_data */
struct iommu_viommu_selftest {
    uint32_t in_data;
    uint32_t out_data;
    uint64_t out_mmap_offset;
    uint64_t out_mmap_length;
};

/* invalidation entry for IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST */
struct iommu_viommu_invalidate_selftest {
    uint32_t flags;                   /* IOMMU_TEST_INVALIDATE_FLAG_ALL ignores cache_id */
    uint32_t vdev_id;
    uint32_t cache_id;
};

/* vEVENT data of IOMMU_VEVENTQ_TYPE_SELFTEST */
struct iommu_viommu_event_selftest {
    uint32_t virt_id;
};
"""

_declare(_CDEF)

# ---- enumerators, read back from the cdef above ----
_e = _enumerators("_anon_iommu_test_op")
IOMMU_TEST_OP_ADD_RESERVED: int = _e["IOMMU_TEST_OP_ADD_RESERVED"]
IOMMU_TEST_OP_MOCK_DOMAIN: int = _e["IOMMU_TEST_OP_MOCK_DOMAIN"]
IOMMU_TEST_OP_MD_CHECK_MAP: int = _e["IOMMU_TEST_OP_MD_CHECK_MAP"]
IOMMU_TEST_OP_MD_CHECK_REFS: int = _e["IOMMU_TEST_OP_MD_CHECK_REFS"]
IOMMU_TEST_OP_CREATE_ACCESS: int = _e["IOMMU_TEST_OP_CREATE_ACCESS"]
IOMMU_TEST_OP_DESTROY_ACCESS_PAGES: int = _e["IOMMU_TEST_OP_DESTROY_ACCESS_PAGES"]
IOMMU_TEST_OP_ACCESS_PAGES: int = _e["IOMMU_TEST_OP_ACCESS_PAGES"]
IOMMU_TEST_OP_ACCESS_RW: int = _e["IOMMU_TEST_OP_ACCESS_RW"]
IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT: int = _e["IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT"]
IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: int = _e["IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE"]
IOMMU_TEST_OP_ACCESS_REPLACE_IOAS: int = _e["IOMMU_TEST_OP_ACCESS_REPLACE_IOAS"]
IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS: int = _e["IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS"]
IOMMU_TEST_OP_DIRTY: int = _e["IOMMU_TEST_OP_DIRTY"]
IOMMU_TEST_OP_MD_CHECK_IOTLB: int = _e["IOMMU_TEST_OP_MD_CHECK_IOTLB"]
IOMMU_TEST_OP_TRIGGER_IOPF: int = _e["IOMMU_TEST_OP_TRIGGER_IOPF"]
IOMMU_TEST_OP_DEV_CHECK_CACHE: int = _e["IOMMU_TEST_OP_DEV_CHECK_CACHE"]
IOMMU_TEST_OP_TRIGGER_VEVENT: int = _e["IOMMU_TEST_OP_TRIGGER_VEVENT"]
IOMMU_TEST_OP_PASID_ATTACH: int = _e["IOMMU_TEST_OP_PASID_ATTACH"]
IOMMU_TEST_OP_PASID_REPLACE: int = _e["IOMMU_TEST_OP_PASID_REPLACE"]
IOMMU_TEST_OP_PASID_DETACH: int = _e["IOMMU_TEST_OP_PASID_DETACH"]
IOMMU_TEST_OP_PASID_CHECK_HWPT: int = _e["IOMMU_TEST_OP_PASID_CHECK_HWPT"]
IOMMU_TEST_OP_DMABUF_GET: int = _e["IOMMU_TEST_OP_DMABUF_GET"]
IOMMU_TEST_OP_DMABUF_REVOKE: int = _e["IOMMU_TEST_OP_DMABUF_REVOKE"]

_e = _enumerators("_anon_mock_iommupt")
MOCK_IOMMUPT_DEFAULT: int = _e["MOCK_IOMMUPT_DEFAULT"]
MOCK_IOMMUPT_HUGE: int = _e["MOCK_IOMMUPT_HUGE"]

_e = _enumerators("_anon_mock_domain")
MOCK_APERTURE_START: int = _e["MOCK_APERTURE_START"]
MOCK_APERTURE_LAST: int = _e["MOCK_APERTURE_LAST"]
MOCK_PAGE_SIZE: int = _e["MOCK_PAGE_SIZE"]
MOCK_HUGE_PAGE_SIZE: int = _e["MOCK_HUGE_PAGE_SIZE"]

_e = _enumerators("_anon_mock_flags_access")
MOCK_FLAGS_ACCESS_WRITE: int = _e["MOCK_FLAGS_ACCESS_WRITE"]
MOCK_FLAGS_ACCESS_SYZ: int = _e["MOCK_FLAGS_ACCESS_SYZ"]

_e = _enumerators("_anon_mock_access_rw")
MOCK_ACCESS_RW_WRITE: int = _e["MOCK_ACCESS_RW_WRITE"]
MOCK_ACCESS_RW_SLOW_PATH: int = _e["MOCK_ACCESS_RW_SLOW_PATH"]

_e = _enumerators("_anon_mock_flags_access_create")
MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES: int = _e["MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES"]

_e = _enumerators("_anon_mock_flags_device")
MOCK_FLAGS_DEVICE_NO_DIRTY: int = _e["MOCK_FLAGS_DEVICE_NO_DIRTY"]
MOCK_FLAGS_DEVICE_PASID: int = _e["MOCK_FLAGS_DEVICE_PASID"]

_e = _enumerators("_anon_mock_nested_iotlb")
MOCK_NESTED_DOMAIN_IOTLB_ID_MAX: int = _e["MOCK_NESTED_DOMAIN_IOTLB_ID_MAX"]
MOCK_NESTED_DOMAIN_IOTLB_NUM: int = _e["MOCK_NESTED_DOMAIN_IOTLB_NUM"]

_e = _enumerators("_anon_mock_dev_cache")
MOCK_DEV_CACHE_ID_MAX: int = _e["MOCK_DEV_CACHE_ID_MAX"]
MOCK_DEV_CACHE_NUM: int = _e["MOCK_DEV_CACHE_NUM"]

del _e

# ---- macros ----
IOMMU_TEST_PASID_RESERVED: int = 1024
"""PASID the mock driver refuses on replace, to exercise the rollback path."""
MOCK_PASID_WIDTH: int = 20

IOMMU_HW_INFO_TYPE_SELFTEST: int = 0xFEEDBEEF
IOMMU_HW_INFO_SELFTEST_REGVAL: int = 0xDEADBEEF

IOMMU_HWPT_DATA_SELFTEST: int = 0xDEAD
IOMMU_TEST_IOTLB_DEFAULT: int = 0xBADBEEF
IOMMU_TEST_DEV_CACHE_DEFAULT: int = 0xBADDAD

IOMMU_HWPT_INVALIDATE_DATA_SELFTEST: int = 0xDEADBEEF
IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID: int = 0xDADBEEF
IOMMU_TEST_INVALIDATE_FLAG_ALL: int = 1 << 0

IOMMU_VIOMMU_TYPE_SELFTEST: int = 0xDEADBEEF
IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST: int = 0xDEADBEEF
IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST_INVALID: int = 0xDADBEEF

IOMMU_VEVENTQ_TYPE_SELFTEST: int = 0xBEEFBEEF

IOMMU_HW_QUEUE_TYPE_SELFTEST: int = 0xDEADBEEF
IOMMU_TEST_HW_QUEUE_MAX: int = 2

# ---- ioctl request number: the test multiplexer sits 32 past the command base ----
IOMMU_TEST_CMD: int = _io_request("IOMMU_TEST_CMD", IOMMUFD_TYPE, IOMMUFD_CMD_BASE + 32)
