"""linux/iommufd.h (Linux 7.3.4) as this project's own cffi declarations.

Every struct keeps its kernel name and field names, so ``ffi.new("struct iommu_ioas_map *")``
reads like C. Kernel ``__aligned_u64``/``__aligned_le64`` fields are plain ``uint64_t``: on
the targets (x86_64, aarch64) a u64 is 8-byte aligned anyway, and the conformance test
proves every size and offset against the real header. Enumerator values come from the
cdef below (one source); ioctl numbers are computed with ioctl_opt.
"""

from uapi_headers._ffi import declare as _declare
from uapi_headers._ffi import enumerators as _enumerators
from uapi_headers._ffi import io_request as _io_request

_CDEF = """
/* ---- command numbers (the ioctl nr byte; the type byte is ';') ---- */
enum _anon_iommufd_cmd {
    IOMMUFD_CMD_BASE = 0x80,
    IOMMUFD_CMD_DESTROY = IOMMUFD_CMD_BASE,
    IOMMUFD_CMD_IOAS_ALLOC = 0x81,
    IOMMUFD_CMD_IOAS_ALLOW_IOVAS = 0x82,
    IOMMUFD_CMD_IOAS_COPY = 0x83,
    IOMMUFD_CMD_IOAS_IOVA_RANGES = 0x84,
    IOMMUFD_CMD_IOAS_MAP = 0x85,
    IOMMUFD_CMD_IOAS_UNMAP = 0x86,
    IOMMUFD_CMD_OPTION = 0x87,
    IOMMUFD_CMD_VFIO_IOAS = 0x88,
    IOMMUFD_CMD_HWPT_ALLOC = 0x89,
    IOMMUFD_CMD_GET_HW_INFO = 0x8a,
    IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING = 0x8b,
    IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP = 0x8c,
    IOMMUFD_CMD_HWPT_INVALIDATE = 0x8d,
    IOMMUFD_CMD_FAULT_QUEUE_ALLOC = 0x8e,
    IOMMUFD_CMD_IOAS_MAP_FILE = 0x8f,
    IOMMUFD_CMD_VIOMMU_ALLOC = 0x90,
    IOMMUFD_CMD_VDEVICE_ALLOC = 0x91,
    IOMMUFD_CMD_IOAS_CHANGE_PROCESS = 0x92,
    IOMMUFD_CMD_VEVENTQ_ALLOC = 0x93,
    IOMMUFD_CMD_HW_QUEUE_ALLOC = 0x94,
    IOMMUFD_CMD_IOAS_NOIOMMU_GET_PA = 0x95
};

/* IOMMU_DESTROY: drop any object by its ID */
struct iommu_destroy {
    uint32_t size;
    uint32_t id;
};

/* IOMMU_IOAS_ALLOC: a new, empty IO address space */
struct iommu_ioas_alloc {
    uint32_t size;
    uint32_t flags;
    uint32_t out_ioas_id;
};

/* one inclusive IOVA interval [start, last] */
struct iommu_iova_range {
    uint64_t start;
    uint64_t last;
};

/* IOMMU_IOAS_IOVA_RANGES: read the usable IOVA intervals into a user array */
struct iommu_ioas_iova_ranges {
    uint32_t size;
    uint32_t ioas_id;
    uint32_t num_iovas;               /* in: array capacity; out: intervals needed */
    uint32_t __reserved;
    uint64_t allowed_iovas;           /* user pointer to struct iommu_iova_range[] */
    uint64_t out_iova_alignment;
};

/* IOMMU_IOAS_ALLOW_IOVAS: replace the list of always-allowed intervals */
struct iommu_ioas_allow_iovas {
    uint32_t size;
    uint32_t ioas_id;
    uint32_t num_iovas;
    uint32_t __reserved;
    uint64_t allowed_iovas;           /* user pointer to struct iommu_iova_range[] */
};

/* flags shared by MAP, MAP_FILE and COPY */
enum iommufd_ioas_map_flags {
    IOMMU_IOAS_MAP_FIXED_IOVA = 1,
    IOMMU_IOAS_MAP_WRITEABLE = 2,
    IOMMU_IOAS_MAP_READABLE = 4
};

/* IOMMU_IOAS_MAP: map user memory at a fixed or kernel-chosen IOVA */
struct iommu_ioas_map {
    uint32_t size;
    uint32_t flags;
    uint32_t ioas_id;
    uint32_t __reserved;
    uint64_t user_va;
    uint64_t length;
    uint64_t iova;                    /* in with FIXED_IOVA, otherwise out */
};

/* IOMMU_IOAS_NOIOMMU_GET_PA (new in 7.3): physical address behind an IOVA */
struct iommu_ioas_noiommu_get_pa {
    uint32_t size;
    uint32_t flags;
    uint32_t ioas_id;
    uint32_t __reserved;
    uint64_t iova;
    uint64_t length;                  /* in: bytes to look at; out: contiguous bytes */
    uint64_t out_phys;
};

/* IOMMU_IOAS_MAP_FILE: like MAP, from a memfd (or a supported dma-buf) */
struct iommu_ioas_map_file {
    uint32_t size;
    uint32_t flags;
    uint32_t ioas_id;
    int32_t fd;
    uint64_t start;                   /* byte offset into the file */
    uint64_t length;
    uint64_t iova;
};

/* IOMMU_IOAS_COPY: share an existing mapping's pages into another IOAS */
struct iommu_ioas_copy {
    uint32_t size;
    uint32_t flags;
    uint32_t dst_ioas_id;
    uint32_t src_ioas_id;
    uint64_t length;
    uint64_t dst_iova;
    uint64_t src_iova;
};

/* IOMMU_IOAS_UNMAP: remove whole areas inside [iova, iova + length) */
struct iommu_ioas_unmap {
    uint32_t size;
    uint32_t ioas_id;
    uint64_t iova;
    uint64_t length;                  /* out: bytes actually unmapped */
};

/* option ids of IOMMU_OPTION */
enum iommufd_option {
    IOMMU_OPTION_RLIMIT_MODE = 0,
    IOMMU_OPTION_HUGE_PAGES = 1
};

/* IOMMU_OPTION operations */
enum iommufd_option_ops {
    IOMMU_OPTION_OP_SET = 0,
    IOMMU_OPTION_OP_GET = 1
};

/* IOMMU_OPTION: get or set one option, globally or per object */
struct iommu_option {
    uint32_t size;
    uint32_t option_id;
    uint16_t op;
    uint16_t __reserved;
    uint32_t object_id;
    uint64_t val64;
};

/* IOMMU_VFIO_IOAS operations */
enum iommufd_vfio_ioas_op {
    IOMMU_VFIO_IOAS_GET = 0,
    IOMMU_VFIO_IOAS_SET = 1,
    IOMMU_VFIO_IOAS_CLEAR = 2
};

/* IOMMU_VFIO_IOAS: the IOAS that VFIO type1 emulation works on */
struct iommu_vfio_ioas {
    uint32_t size;
    uint32_t ioas_id;
    uint16_t op;
    uint16_t __reserved;
};

/* IOMMU_HWPT_ALLOC flags */
enum iommufd_hwpt_alloc_flags {
    IOMMU_HWPT_ALLOC_NEST_PARENT = 1,
    IOMMU_HWPT_ALLOC_DIRTY_TRACKING = 2,
    IOMMU_HWPT_FAULT_ID_VALID = 4,
    IOMMU_HWPT_ALLOC_PASID = 8
};

/* Intel VT-d stage-1 table attribute bits */
enum iommu_hwpt_vtd_s1_flags {
    IOMMU_VTD_S1_SRE = 1,
    IOMMU_VTD_S1_EAFE = 2,
    IOMMU_VTD_S1_WPE = 4
};

/* nested HWPT data for IOMMU_HWPT_DATA_VTD_S1 */
struct iommu_hwpt_vtd_s1 {
    uint64_t flags;
    uint64_t pgtbl_addr;
    uint32_t addr_width;
    uint32_t __reserved;
};

/* nested HWPT data for IOMMU_HWPT_DATA_ARM_SMMUV3: two little-endian STE words */
struct iommu_hwpt_arm_smmuv3 {
    uint64_t ste[2];
};

/* nested HWPT data for IOMMU_HWPT_DATA_AMD_GUEST: the guest DTE */
struct iommu_hwpt_amd_guest {
    uint64_t dte[4];
};

/* what iommu_hwpt_alloc.data_uptr points at */
enum iommu_hwpt_data_type {
    IOMMU_HWPT_DATA_NONE = 0,
    IOMMU_HWPT_DATA_VTD_S1 = 1,
    IOMMU_HWPT_DATA_ARM_SMMUV3 = 2,
    IOMMU_HWPT_DATA_AMD_GUEST = 3
};

/* IOMMU_HWPT_ALLOC: paging HWPT from an IOAS, or nested from a parent / vIOMMU */
struct iommu_hwpt_alloc {
    uint32_t size;
    uint32_t flags;
    uint32_t dev_id;
    uint32_t pt_id;
    uint32_t out_hwpt_id;
    uint32_t __reserved;
    uint32_t data_type;
    uint32_t data_len;
    uint64_t data_uptr;
    uint32_t fault_id;                /* read only with IOMMU_HWPT_FAULT_ID_VALID */
    uint32_t __reserved2;
};

/* VT-d hw_info flags */
enum iommu_hw_info_vtd_flags {
    IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17 = 1
};

/* GET_HW_INFO data for IOMMU_HW_INFO_TYPE_INTEL_VTD */
struct iommu_hw_info_vtd {
    uint32_t flags;
    uint32_t __reserved;
    uint64_t cap_reg;
    uint64_t ecap_reg;
};

/* SMMUv3 hw_info flags (the errata bit is new in 7.3) */
enum iommu_hw_info_arm_smmuv3_flags {
    IOMMU_HW_INFO_ARM_SMMUV3_ERRATA_REPEAT_TLBI_CFGI = 1
};

/* GET_HW_INFO data for IOMMU_HW_INFO_TYPE_ARM_SMMUV3: raw ID registers */
struct iommu_hw_info_arm_smmuv3 {
    uint32_t flags;
    uint32_t __reserved;
    uint32_t idr[6];
    uint32_t iidr;
    uint32_t aidr;
};

/* GET_HW_INFO data for IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV */
struct iommu_hw_info_tegra241_cmdqv {
    uint32_t flags;
    uint8_t version;
    uint8_t log2vcmdqs;
    uint8_t log2vsids;
    uint8_t __reserved;
};

/* GET_HW_INFO data for IOMMU_HW_INFO_TYPE_AMD: raw feature registers */
struct iommu_hw_info_amd {
    uint64_t efr;
    uint64_t efr2;
};

/* which driver blob GET_HW_INFO returns (NONE and DEFAULT share 0) */
enum iommu_hw_info_type {
    IOMMU_HW_INFO_TYPE_NONE = 0,
    IOMMU_HW_INFO_TYPE_DEFAULT = 0,
    IOMMU_HW_INFO_TYPE_INTEL_VTD = 1,
    IOMMU_HW_INFO_TYPE_ARM_SMMUV3 = 2,
    IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV = 3,
    IOMMU_HW_INFO_TYPE_AMD = 4
};

/* bits of iommu_hw_info.out_capabilities */
enum iommufd_hw_capabilities {
    IOMMU_HW_CAP_DIRTY_TRACKING = 1,
    IOMMU_HW_CAP_PCI_PASID_EXEC = 2,
    IOMMU_HW_CAP_PCI_PASID_PRIV = 4,
    IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED = 8
};

/* iommu_hw_info.flags */
enum iommufd_hw_info_flags {
    IOMMU_HW_INFO_FLAG_INPUT_TYPE = 1
};

/* IOMMU_GET_HW_INFO: driver blob and capabilities of a bound device's IOMMU */
struct iommu_hw_info {
    uint32_t size;
    uint32_t flags;
    uint32_t dev_id;
    uint32_t data_len;
    uint64_t data_uptr;
    union {                           /* one field, read or written per FLAG_INPUT_TYPE */
        uint32_t in_data_type;
        uint32_t out_data_type;
    };
    uint8_t out_max_pasid_log2;
    uint8_t __reserved[3];
    uint64_t out_capabilities;
};

/* IOMMU_HWPT_SET_DIRTY_TRACKING flags */
enum iommufd_hwpt_set_dirty_tracking_flags {
    IOMMU_HWPT_DIRTY_TRACKING_ENABLE = 1
};

/* IOMMU_HWPT_SET_DIRTY_TRACKING: switch dirty tracking of a HWPT */
struct iommu_hwpt_set_dirty_tracking {
    uint32_t size;
    uint32_t flags;
    uint32_t hwpt_id;
    uint32_t __reserved;
};

/* IOMMU_HWPT_GET_DIRTY_BITMAP flags */
enum iommufd_hwpt_get_dirty_bitmap_flags {
    IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR = 1
};

/* IOMMU_HWPT_GET_DIRTY_BITMAP: one bit per page_size of [iova, iova + length) */
struct iommu_hwpt_get_dirty_bitmap {
    uint32_t size;
    uint32_t hwpt_id;
    uint32_t flags;
    uint32_t __reserved;
    uint64_t iova;
    uint64_t length;
    uint64_t page_size;
    uint64_t data;                    /* user pointer to the bitmap (u64 words) */
};

/* entry types of IOMMU_HWPT_INVALIDATE */
enum iommu_hwpt_invalidate_data_type {
    IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 = 0,
    IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3 = 1
};

/* VT-d invalidation entry flags */
enum iommu_hwpt_vtd_s1_invalidate_flags {
    IOMMU_VTD_INV_FLAGS_LEAF = 1
};

/* invalidation entry for IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 */
struct iommu_hwpt_vtd_s1_invalidate {
    uint64_t addr;
    uint64_t npages;
    uint32_t flags;
    uint32_t __reserved;
};

/* invalidation entry for IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3: one LE CMDQ command */
struct iommu_viommu_arm_smmuv3_invalidate {
    uint64_t cmd[2];
};

/* IOMMU_HWPT_INVALIDATE: run an array of driver invalidation entries */
struct iommu_hwpt_invalidate {
    uint32_t size;
    uint32_t hwpt_id;                 /* a nested HWPT or a vIOMMU */
    uint64_t data_uptr;
    uint32_t data_type;
    uint32_t entry_len;
    uint32_t entry_num;               /* in: entries; out: entries handled */
    uint32_t __reserved;
};

/* iommu_hwpt_pgfault.flags */
enum iommu_hwpt_pgfault_flags {
    IOMMU_PGFAULT_FLAGS_PASID_VALID = 1,
    IOMMU_PGFAULT_FLAGS_LAST_PAGE = 2
};

/* iommu_hwpt_pgfault.perm */
enum iommu_hwpt_pgfault_perm {
    IOMMU_PGFAULT_PERM_READ = 1,
    IOMMU_PGFAULT_PERM_WRITE = 2,
    IOMMU_PGFAULT_PERM_EXEC = 4,
    IOMMU_PGFAULT_PERM_PRIV = 8
};

/* one record read() from a FAULT fd */
struct iommu_hwpt_pgfault {
    uint32_t flags;
    uint32_t dev_id;
    uint32_t pasid;
    uint32_t grpid;
    uint32_t perm;
    uint32_t __reserved;
    uint64_t addr;
    uint32_t length;
    uint32_t cookie;
};

/* iommu_hwpt_page_response.code */
enum iommufd_page_response_code {
    IOMMUFD_PAGE_RESP_SUCCESS = 0,
    IOMMUFD_PAGE_RESP_INVALID = 1
};

/* one record write() to a FAULT fd */
struct iommu_hwpt_page_response {
    uint32_t cookie;
    uint32_t code;
};

/* IOMMU_FAULT_QUEUE_ALLOC: a FAULT object and its fd */
struct iommu_fault_alloc {
    uint32_t size;
    uint32_t flags;
    uint32_t out_fault_id;
    uint32_t out_fault_fd;
};

/* vIOMMU types (DEFAULT is reserved) */
enum iommu_viommu_type {
    IOMMU_VIOMMU_TYPE_DEFAULT = 0,
    IOMMU_VIOMMU_TYPE_ARM_SMMUV3 = 1,
    IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV = 2
};

/* vIOMMU data for IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV: where to mmap VINTF page0 */
struct iommu_viommu_tegra241_cmdqv {
    uint64_t out_vintf_mmap_offset;
    uint64_t out_vintf_mmap_length;
};

/* IOMMU_VIOMMU_ALLOC: a vIOMMU on a device's IOMMU over a nest-parent HWPT */
struct iommu_viommu_alloc {
    uint32_t size;
    uint32_t flags;
    uint32_t type;
    uint32_t dev_id;
    uint32_t hwpt_id;
    uint32_t out_viommu_id;
    uint32_t data_len;
    uint32_t __reserved;
    uint64_t data_uptr;
};

/* IOMMU_VDEVICE_ALLOC: a device's virtual ID on a vIOMMU */
struct iommu_vdevice_alloc {
    uint32_t size;
    uint32_t viommu_id;
    uint32_t dev_id;
    uint32_t out_vdevice_id;
    uint64_t virt_id;
};

/* IOMMU_IOAS_CHANGE_PROCESS: move pinned-page accounting to the caller */
struct iommu_ioas_change_process {
    uint32_t size;
    uint32_t __reserved;
};

/* iommufd_vevent_header.flags */
enum iommu_veventq_flag {
    IOMMU_VEVENTQ_FLAG_LOST_EVENTS = 1
};

/* header in front of every vEVENT read() from a vEVENTQ fd */
struct iommufd_vevent_header {
    uint32_t flags;
    uint32_t sequence;                /* wraps from INT_MAX to 0 */
};

/* vEVENTQ types (DEFAULT is reserved) */
enum iommu_veventq_type {
    IOMMU_VEVENTQ_TYPE_DEFAULT = 0,
    IOMMU_VEVENTQ_TYPE_ARM_SMMUV3 = 1,
    IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV = 2
};

/* vEVENT data of IOMMU_VEVENTQ_TYPE_ARM_SMMUV3: a 256-bit LE event record */
struct iommu_vevent_arm_smmuv3 {
    uint64_t evt[4];
};

/* vEVENT data of IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV: a 128-bit LE error map */
struct iommu_vevent_tegra241_cmdqv {
    uint64_t lvcmdq_err_map[2];
};

/* IOMMU_VEVENTQ_ALLOC: an event queue of one type on a vIOMMU, and its fd */
struct iommu_veventq_alloc {
    uint32_t size;
    uint32_t flags;
    uint32_t viommu_id;
    uint32_t type;
    uint32_t veventq_depth;
    uint32_t out_veventq_id;
    uint32_t out_veventq_fd;
    uint32_t __reserved;
};

/* HW queue types (DEFAULT is reserved) */
enum iommu_hw_queue_type {
    IOMMU_HW_QUEUE_TYPE_DEFAULT = 0,
    IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV = 1
};

/* IOMMU_HW_QUEUE_ALLOC: a HW-accelerated queue in guest memory on a vIOMMU */
struct iommu_hw_queue_alloc {
    uint32_t size;
    uint32_t flags;
    uint32_t viommu_id;
    uint32_t type;
    uint32_t index;
    uint32_t out_hw_queue_id;
    uint64_t nesting_parent_iova;
    uint64_t length;
};
"""

_declare(_CDEF)

# ---- enumerators, read back from the cdef above ----
_e = _enumerators("_anon_iommufd_cmd")
IOMMUFD_CMD_BASE: int = _e["IOMMUFD_CMD_BASE"]
IOMMUFD_CMD_DESTROY: int = _e["IOMMUFD_CMD_DESTROY"]
IOMMUFD_CMD_IOAS_ALLOC: int = _e["IOMMUFD_CMD_IOAS_ALLOC"]
IOMMUFD_CMD_IOAS_ALLOW_IOVAS: int = _e["IOMMUFD_CMD_IOAS_ALLOW_IOVAS"]
IOMMUFD_CMD_IOAS_COPY: int = _e["IOMMUFD_CMD_IOAS_COPY"]
IOMMUFD_CMD_IOAS_IOVA_RANGES: int = _e["IOMMUFD_CMD_IOAS_IOVA_RANGES"]
IOMMUFD_CMD_IOAS_MAP: int = _e["IOMMUFD_CMD_IOAS_MAP"]
IOMMUFD_CMD_IOAS_UNMAP: int = _e["IOMMUFD_CMD_IOAS_UNMAP"]
IOMMUFD_CMD_OPTION: int = _e["IOMMUFD_CMD_OPTION"]
IOMMUFD_CMD_VFIO_IOAS: int = _e["IOMMUFD_CMD_VFIO_IOAS"]
IOMMUFD_CMD_HWPT_ALLOC: int = _e["IOMMUFD_CMD_HWPT_ALLOC"]
IOMMUFD_CMD_GET_HW_INFO: int = _e["IOMMUFD_CMD_GET_HW_INFO"]
IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING: int = _e["IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING"]
IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP: int = _e["IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP"]
IOMMUFD_CMD_HWPT_INVALIDATE: int = _e["IOMMUFD_CMD_HWPT_INVALIDATE"]
IOMMUFD_CMD_FAULT_QUEUE_ALLOC: int = _e["IOMMUFD_CMD_FAULT_QUEUE_ALLOC"]
IOMMUFD_CMD_IOAS_MAP_FILE: int = _e["IOMMUFD_CMD_IOAS_MAP_FILE"]
IOMMUFD_CMD_VIOMMU_ALLOC: int = _e["IOMMUFD_CMD_VIOMMU_ALLOC"]
IOMMUFD_CMD_VDEVICE_ALLOC: int = _e["IOMMUFD_CMD_VDEVICE_ALLOC"]
IOMMUFD_CMD_IOAS_CHANGE_PROCESS: int = _e["IOMMUFD_CMD_IOAS_CHANGE_PROCESS"]
IOMMUFD_CMD_VEVENTQ_ALLOC: int = _e["IOMMUFD_CMD_VEVENTQ_ALLOC"]
IOMMUFD_CMD_HW_QUEUE_ALLOC: int = _e["IOMMUFD_CMD_HW_QUEUE_ALLOC"]
IOMMUFD_CMD_IOAS_NOIOMMU_GET_PA: int = _e["IOMMUFD_CMD_IOAS_NOIOMMU_GET_PA"]

_e = _enumerators("iommufd_ioas_map_flags")
IOMMU_IOAS_MAP_FIXED_IOVA: int = _e["IOMMU_IOAS_MAP_FIXED_IOVA"]
IOMMU_IOAS_MAP_WRITEABLE: int = _e["IOMMU_IOAS_MAP_WRITEABLE"]
IOMMU_IOAS_MAP_READABLE: int = _e["IOMMU_IOAS_MAP_READABLE"]

_e = _enumerators("iommufd_option")
IOMMU_OPTION_RLIMIT_MODE: int = _e["IOMMU_OPTION_RLIMIT_MODE"]
IOMMU_OPTION_HUGE_PAGES: int = _e["IOMMU_OPTION_HUGE_PAGES"]

_e = _enumerators("iommufd_option_ops")
IOMMU_OPTION_OP_SET: int = _e["IOMMU_OPTION_OP_SET"]
IOMMU_OPTION_OP_GET: int = _e["IOMMU_OPTION_OP_GET"]

_e = _enumerators("iommufd_vfio_ioas_op")
IOMMU_VFIO_IOAS_GET: int = _e["IOMMU_VFIO_IOAS_GET"]
IOMMU_VFIO_IOAS_SET: int = _e["IOMMU_VFIO_IOAS_SET"]
IOMMU_VFIO_IOAS_CLEAR: int = _e["IOMMU_VFIO_IOAS_CLEAR"]

_e = _enumerators("iommufd_hwpt_alloc_flags")
IOMMU_HWPT_ALLOC_NEST_PARENT: int = _e["IOMMU_HWPT_ALLOC_NEST_PARENT"]
IOMMU_HWPT_ALLOC_DIRTY_TRACKING: int = _e["IOMMU_HWPT_ALLOC_DIRTY_TRACKING"]
IOMMU_HWPT_FAULT_ID_VALID: int = _e["IOMMU_HWPT_FAULT_ID_VALID"]
IOMMU_HWPT_ALLOC_PASID: int = _e["IOMMU_HWPT_ALLOC_PASID"]

_e = _enumerators("iommu_hwpt_vtd_s1_flags")
IOMMU_VTD_S1_SRE: int = _e["IOMMU_VTD_S1_SRE"]
IOMMU_VTD_S1_EAFE: int = _e["IOMMU_VTD_S1_EAFE"]
IOMMU_VTD_S1_WPE: int = _e["IOMMU_VTD_S1_WPE"]

_e = _enumerators("iommu_hwpt_data_type")
IOMMU_HWPT_DATA_NONE: int = _e["IOMMU_HWPT_DATA_NONE"]
IOMMU_HWPT_DATA_VTD_S1: int = _e["IOMMU_HWPT_DATA_VTD_S1"]
IOMMU_HWPT_DATA_ARM_SMMUV3: int = _e["IOMMU_HWPT_DATA_ARM_SMMUV3"]
IOMMU_HWPT_DATA_AMD_GUEST: int = _e["IOMMU_HWPT_DATA_AMD_GUEST"]

_e = _enumerators("iommu_hw_info_vtd_flags")
IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17: int = _e["IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17"]

_e = _enumerators("iommu_hw_info_arm_smmuv3_flags")
IOMMU_HW_INFO_ARM_SMMUV3_ERRATA_REPEAT_TLBI_CFGI: int = _e[
    "IOMMU_HW_INFO_ARM_SMMUV3_ERRATA_REPEAT_TLBI_CFGI"
]

_e = _enumerators("iommu_hw_info_type")
IOMMU_HW_INFO_TYPE_NONE: int = _e["IOMMU_HW_INFO_TYPE_NONE"]
IOMMU_HW_INFO_TYPE_DEFAULT: int = _e["IOMMU_HW_INFO_TYPE_DEFAULT"]
IOMMU_HW_INFO_TYPE_INTEL_VTD: int = _e["IOMMU_HW_INFO_TYPE_INTEL_VTD"]
IOMMU_HW_INFO_TYPE_ARM_SMMUV3: int = _e["IOMMU_HW_INFO_TYPE_ARM_SMMUV3"]
IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV: int = _e["IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV"]
IOMMU_HW_INFO_TYPE_AMD: int = _e["IOMMU_HW_INFO_TYPE_AMD"]

_e = _enumerators("iommufd_hw_capabilities")
IOMMU_HW_CAP_DIRTY_TRACKING: int = _e["IOMMU_HW_CAP_DIRTY_TRACKING"]
IOMMU_HW_CAP_PCI_PASID_EXEC: int = _e["IOMMU_HW_CAP_PCI_PASID_EXEC"]
IOMMU_HW_CAP_PCI_PASID_PRIV: int = _e["IOMMU_HW_CAP_PCI_PASID_PRIV"]
IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED: int = _e["IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED"]

_e = _enumerators("iommufd_hw_info_flags")
IOMMU_HW_INFO_FLAG_INPUT_TYPE: int = _e["IOMMU_HW_INFO_FLAG_INPUT_TYPE"]

_e = _enumerators("iommufd_hwpt_set_dirty_tracking_flags")
IOMMU_HWPT_DIRTY_TRACKING_ENABLE: int = _e["IOMMU_HWPT_DIRTY_TRACKING_ENABLE"]

_e = _enumerators("iommufd_hwpt_get_dirty_bitmap_flags")
IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR: int = _e["IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR"]

_e = _enumerators("iommu_hwpt_invalidate_data_type")
IOMMU_HWPT_INVALIDATE_DATA_VTD_S1: int = _e["IOMMU_HWPT_INVALIDATE_DATA_VTD_S1"]
IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3: int = _e["IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3"]

_e = _enumerators("iommu_hwpt_vtd_s1_invalidate_flags")
IOMMU_VTD_INV_FLAGS_LEAF: int = _e["IOMMU_VTD_INV_FLAGS_LEAF"]

_e = _enumerators("iommu_hwpt_pgfault_flags")
IOMMU_PGFAULT_FLAGS_PASID_VALID: int = _e["IOMMU_PGFAULT_FLAGS_PASID_VALID"]
IOMMU_PGFAULT_FLAGS_LAST_PAGE: int = _e["IOMMU_PGFAULT_FLAGS_LAST_PAGE"]

_e = _enumerators("iommu_hwpt_pgfault_perm")
IOMMU_PGFAULT_PERM_READ: int = _e["IOMMU_PGFAULT_PERM_READ"]
IOMMU_PGFAULT_PERM_WRITE: int = _e["IOMMU_PGFAULT_PERM_WRITE"]
IOMMU_PGFAULT_PERM_EXEC: int = _e["IOMMU_PGFAULT_PERM_EXEC"]
IOMMU_PGFAULT_PERM_PRIV: int = _e["IOMMU_PGFAULT_PERM_PRIV"]

_e = _enumerators("iommufd_page_response_code")
IOMMUFD_PAGE_RESP_SUCCESS: int = _e["IOMMUFD_PAGE_RESP_SUCCESS"]
IOMMUFD_PAGE_RESP_INVALID: int = _e["IOMMUFD_PAGE_RESP_INVALID"]

_e = _enumerators("iommu_viommu_type")
IOMMU_VIOMMU_TYPE_DEFAULT: int = _e["IOMMU_VIOMMU_TYPE_DEFAULT"]
IOMMU_VIOMMU_TYPE_ARM_SMMUV3: int = _e["IOMMU_VIOMMU_TYPE_ARM_SMMUV3"]
IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV: int = _e["IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV"]

_e = _enumerators("iommu_veventq_flag")
IOMMU_VEVENTQ_FLAG_LOST_EVENTS: int = _e["IOMMU_VEVENTQ_FLAG_LOST_EVENTS"]

_e = _enumerators("iommu_veventq_type")
IOMMU_VEVENTQ_TYPE_DEFAULT: int = _e["IOMMU_VEVENTQ_TYPE_DEFAULT"]
IOMMU_VEVENTQ_TYPE_ARM_SMMUV3: int = _e["IOMMU_VEVENTQ_TYPE_ARM_SMMUV3"]
IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV: int = _e["IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV"]

_e = _enumerators("iommu_hw_queue_type")
IOMMU_HW_QUEUE_TYPE_DEFAULT: int = _e["IOMMU_HW_QUEUE_TYPE_DEFAULT"]
IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV: int = _e["IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV"]

del _e

# ---- macros ----
IOMMUFD_TYPE: int = ord(";")
"""The ioctl type byte of every iommufd command (0x3b)."""


def _io(name: str, nr: int) -> int:
    return _io_request(name, IOMMUFD_TYPE, nr)


# ---- ioctl request numbers: _IO(IOMMUFD_TYPE, IOMMUFD_CMD_*) ----
IOMMU_DESTROY: int = _io("IOMMU_DESTROY", IOMMUFD_CMD_DESTROY)
IOMMU_IOAS_ALLOC: int = _io("IOMMU_IOAS_ALLOC", IOMMUFD_CMD_IOAS_ALLOC)
IOMMU_IOAS_ALLOW_IOVAS: int = _io("IOMMU_IOAS_ALLOW_IOVAS", IOMMUFD_CMD_IOAS_ALLOW_IOVAS)
IOMMU_IOAS_COPY: int = _io("IOMMU_IOAS_COPY", IOMMUFD_CMD_IOAS_COPY)
IOMMU_IOAS_IOVA_RANGES: int = _io("IOMMU_IOAS_IOVA_RANGES", IOMMUFD_CMD_IOAS_IOVA_RANGES)
IOMMU_IOAS_MAP: int = _io("IOMMU_IOAS_MAP", IOMMUFD_CMD_IOAS_MAP)
IOMMU_IOAS_UNMAP: int = _io("IOMMU_IOAS_UNMAP", IOMMUFD_CMD_IOAS_UNMAP)
IOMMU_OPTION: int = _io("IOMMU_OPTION", IOMMUFD_CMD_OPTION)
IOMMU_VFIO_IOAS: int = _io("IOMMU_VFIO_IOAS", IOMMUFD_CMD_VFIO_IOAS)
IOMMU_HWPT_ALLOC: int = _io("IOMMU_HWPT_ALLOC", IOMMUFD_CMD_HWPT_ALLOC)
IOMMU_GET_HW_INFO: int = _io("IOMMU_GET_HW_INFO", IOMMUFD_CMD_GET_HW_INFO)
IOMMU_HWPT_SET_DIRTY_TRACKING: int = _io(
    "IOMMU_HWPT_SET_DIRTY_TRACKING", IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING
)
IOMMU_HWPT_GET_DIRTY_BITMAP: int = _io(
    "IOMMU_HWPT_GET_DIRTY_BITMAP", IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP
)
IOMMU_HWPT_INVALIDATE: int = _io("IOMMU_HWPT_INVALIDATE", IOMMUFD_CMD_HWPT_INVALIDATE)
IOMMU_FAULT_QUEUE_ALLOC: int = _io("IOMMU_FAULT_QUEUE_ALLOC", IOMMUFD_CMD_FAULT_QUEUE_ALLOC)
IOMMU_IOAS_MAP_FILE: int = _io("IOMMU_IOAS_MAP_FILE", IOMMUFD_CMD_IOAS_MAP_FILE)
IOMMU_VIOMMU_ALLOC: int = _io("IOMMU_VIOMMU_ALLOC", IOMMUFD_CMD_VIOMMU_ALLOC)
IOMMU_VDEVICE_ALLOC: int = _io("IOMMU_VDEVICE_ALLOC", IOMMUFD_CMD_VDEVICE_ALLOC)
IOMMU_IOAS_CHANGE_PROCESS: int = _io("IOMMU_IOAS_CHANGE_PROCESS", IOMMUFD_CMD_IOAS_CHANGE_PROCESS)
IOMMU_VEVENTQ_ALLOC: int = _io("IOMMU_VEVENTQ_ALLOC", IOMMUFD_CMD_VEVENTQ_ALLOC)
IOMMU_HW_QUEUE_ALLOC: int = _io("IOMMU_HW_QUEUE_ALLOC", IOMMUFD_CMD_HW_QUEUE_ALLOC)
IOMMU_IOAS_NOIOMMU_GET_PA: int = _io("IOMMU_IOAS_NOIOMMU_GET_PA", IOMMUFD_CMD_IOAS_NOIOMMU_GET_PA)
