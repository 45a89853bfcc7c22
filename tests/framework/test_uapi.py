"""Fast unit tests of the ABI layer (uapi_headers): numbers, command table, layout walking.

The expected values are written out by hand from the kernel's documented ABI (reference
doc kernel-iommufd.md section 1), independently of the declarations; the full field-by-field
check against the real headers is test_abi_conformance.py.
"""

from __future__ import annotations

import pytest

import uapi_headers as u
from uapi_headers import layout
from uapi_headers.layout import FieldInfo

# ---- ioctl numbers: _IO(';', nr) is 0x3b00 | nr (no size, no direction) ----


def test_iommufd_ioctl_numbers() -> None:
    """The two ends of the command range and the selftest multiplexer."""
    assert u.IOMMUFD_TYPE == 0x3B
    assert u.IOMMU_DESTROY == 0x3B80
    assert u.IOMMU_IOAS_ALLOC == 0x3B81
    assert u.IOMMU_IOAS_MAP == 0x3B85
    assert u.IOMMU_HWPT_ALLOC == 0x3B89
    assert u.IOMMU_GET_HW_INFO == 0x3B8A
    assert u.IOMMU_VEVENTQ_ALLOC == 0x3B93
    assert u.IOMMU_HW_QUEUE_ALLOC == 0x3B94
    assert u.IOMMU_IOAS_NOIOMMU_GET_PA == 0x3B95
    assert u.IOMMU_TEST_CMD == 0x3BA0


def test_vfio_ioctl_numbers() -> None:
    """VFIO shares type ';' and counts from VFIO_BASE 100 (0x64)."""
    assert u.VFIO_GET_API_VERSION == 0x3B64
    assert u.VFIO_CHECK_EXTENSION == 0x3B65
    assert u.VFIO_SET_IOMMU == 0x3B66
    assert u.VFIO_IOMMU_GET_INFO == 0x3B70
    assert u.VFIO_IOMMU_MAP_DMA == 0x3B71
    assert u.VFIO_IOMMU_UNMAP_DMA == 0x3B72
    assert u.VFIO_IOMMU_DIRTY_PAGES == 0x3B75
    assert u.VFIO_DEVICE_BIND_IOMMUFD == 0x3B76
    assert u.VFIO_DEVICE_ATTACH_IOMMUFD_PT == 0x3B77
    assert u.VFIO_DEVICE_DETACH_IOMMUFD_PT == 0x3B78


def test_every_ioctl_is_a_plain_io_of_type_semicolon() -> None:
    """No request number carries a size or direction, and no two names share a number."""
    for name, request in u.IOCTLS.items():
        assert request >> 8 == 0x3B, name
    assert len(set(u.IOCTLS.values())) == len(u.IOCTLS)
    for command in u.IOMMUFD_COMMANDS:
        assert u.IOCTLS[command.name] == command.request == 0x3B00 | command.nr


def test_ioctls_and_constants_are_separate_tables() -> None:
    """IOCTLS holds request numbers only; CONSTANTS the rest, both by kernel name."""
    assert not u.IOCTLS.keys() & u.CONSTANTS.keys()
    assert "IOMMU_DESTROY" in u.IOCTLS
    assert u.CONSTANTS["IOMMUFD_CMD_DESTROY"] == 0x80
    assert u.CONSTANTS["MOCK_PAGE_SIZE"] == 2048
    assert u.CONSTANTS["__VFIO_RESERVED_TYPE1_NESTING_IOMMU"] == 6
    assert "CDEF" not in u.CONSTANTS
    for name, value in u.CONSTANTS.items():
        assert getattr(u, name) == value, name


# ---- the command table (reference section 1.2: size / min per command) ----

# nr, ioctl name, sizeof, min_size (offsetofend of the original last field)
COMMAND_TABLE = [
    (0x80, "IOMMU_DESTROY", 8, 8),
    (0x81, "IOMMU_IOAS_ALLOC", 12, 12),
    (0x82, "IOMMU_IOAS_ALLOW_IOVAS", 24, 24),
    (0x83, "IOMMU_IOAS_COPY", 40, 40),
    (0x84, "IOMMU_IOAS_IOVA_RANGES", 32, 32),
    (0x85, "IOMMU_IOAS_MAP", 40, 40),
    (0x86, "IOMMU_IOAS_UNMAP", 24, 24),
    (0x87, "IOMMU_OPTION", 24, 24),
    (0x88, "IOMMU_VFIO_IOAS", 12, 12),
    (0x89, "IOMMU_HWPT_ALLOC", 48, 24),
    (0x8A, "IOMMU_GET_HW_INFO", 40, 32),
    (0x8B, "IOMMU_HWPT_SET_DIRTY_TRACKING", 16, 16),
    (0x8C, "IOMMU_HWPT_GET_DIRTY_BITMAP", 48, 48),
    (0x8D, "IOMMU_HWPT_INVALIDATE", 32, 32),
    (0x8E, "IOMMU_FAULT_QUEUE_ALLOC", 16, 16),
    (0x8F, "IOMMU_IOAS_MAP_FILE", 40, 40),
    (0x90, "IOMMU_VIOMMU_ALLOC", 40, 24),
    (0x91, "IOMMU_VDEVICE_ALLOC", 24, 24),
    (0x92, "IOMMU_IOAS_CHANGE_PROCESS", 8, 8),
    (0x93, "IOMMU_VEVENTQ_ALLOC", 32, 28),
    (0x94, "IOMMU_HW_QUEUE_ALLOC", 40, 40),
    (0x95, "IOMMU_IOAS_NOIOMMU_GET_PA", 40, 40),
    (0xA0, "IOMMU_TEST_CMD", 72, 68),
]


def test_command_table_is_complete_and_ordered() -> None:
    """Exactly the 22 commands of 7.3 plus IOMMU_TEST_CMD, sorted by nr."""
    assert [(c.nr, c.name) for c in u.IOMMUFD_COMMANDS] == [
        (nr, name) for nr, name, _, _ in COMMAND_TABLE
    ]


@pytest.mark.parametrize(("nr", "name", "size", "min_size"), COMMAND_TABLE,
                         ids=[row[1] for row in COMMAND_TABLE])
def test_command_sizes(nr: int, name: str, size: int, min_size: int) -> None:
    """sizeof and min_size of each command's struct, as the kernel's dispatch table has them."""
    command = u.command_by_name(name)
    assert command.nr == nr
    assert command.request == getattr(u, name)
    assert (command.size, command.min_size) == (size, min_size)
    assert command.size == u.ffi.sizeof(command.struct)
    assert command.min_size == u.offsetofend(command.struct, command.last_field)
    assert u.ffi.sizeof(command.struct) >= command.min_size


def test_command_lookups() -> None:
    """By nr, by full request and by name; unknown ones are None (ENOTTY) or KeyError."""
    destroy = u.command_by_nr(0x80)
    assert destroy is not None and destroy.name == "IOMMU_DESTROY"
    assert destroy.struct == "struct iommu_destroy" and destroy.last_field == "id"
    assert u.command_by_request(u.IOMMU_DESTROY) is destroy
    assert u.command_by_name("IOMMU_DESTROY") is destroy

    test_cmd = u.command_by_nr(0xA0)
    assert test_cmd is not None and test_cmd.request == u.IOMMU_TEST_CMD
    assert test_cmd.last_field == "last"

    assert u.command_by_nr(0x96) is None  # past the table
    assert u.command_by_nr(0x7F) is None  # below IOMMUFD_CMD_BASE
    assert u.command_by_request(0x3B96) is None
    # VFIO numbers share the type byte but are not iommufd commands.
    assert u.command_by_request(u.VFIO_IOMMU_MAP_DMA) is None
    # Same nr, another type byte: not ours.
    assert u.command_by_request(0x4B80) is None
    with pytest.raises(KeyError):
        u.command_by_name("IOMMU_NO_SUCH_CMD")


def test_offsetofend() -> None:
    """offset + size of a field, including a field inside an anonymous union."""
    assert u.offsetofend("struct iommu_destroy", "id") == 8
    assert u.offsetofend("struct iommu_hwpt_alloc", "__reserved") == 24
    assert u.offsetofend("struct iommu_hwpt_alloc", "__reserved2") == 48
    assert u.offsetofend("struct iommu_hw_info", "out_data_type") == 28
    assert u.offsetofend("struct iommu_hw_info", "in_data_type") == 28
    assert u.offsetofend("struct iommu_test_cmd", "last") == 68
    assert u.offsetofend("struct vfio_device_bind_iommufd", "out_devid") == 16
    assert u.offsetofend("struct vfio_device_attach_iommufd_pt", "pt_id") == 12
    assert u.offsetofend("struct vfio_device_detach_iommufd_pt", "flags") == 8
    with pytest.raises(KeyError):
        u.offsetofend("struct iommu_destroy", "no_such_field")


# ---- struct sizes of the data blobs and records (reference 1.2 notes, 1.3, 1.4) ----

@pytest.mark.parametrize(("struct", "size"), [
    ("struct iommu_iova_range", 16),
    ("struct iommu_hwpt_vtd_s1", 24),
    ("struct iommu_hwpt_arm_smmuv3", 16),
    ("struct iommu_hwpt_amd_guest", 32),
    ("struct iommu_hwpt_vtd_s1_invalidate", 24),
    ("struct iommu_viommu_arm_smmuv3_invalidate", 16),
    ("struct iommu_hwpt_pgfault", 40),
    ("struct iommu_hwpt_page_response", 8),
    ("struct iommufd_vevent_header", 8),
    ("struct iommu_vevent_arm_smmuv3", 32),
    ("struct iommu_viommu_selftest", 24),
    ("struct iommu_viommu_invalidate_selftest", 12),
    ("struct iommu_hwpt_selftest", 8),
    ("struct iommu_test_hw_info", 8),
    ("struct vfio_device_bind_iommufd", 24),
    ("struct vfio_device_attach_iommufd_pt", 16),
    ("struct vfio_device_detach_iommufd_pt", 12),
])
def test_struct_sizes(struct: str, size: int) -> None:
    """sizeof the structs that are not command arguments."""
    assert u.ffi.sizeof(struct) == size


def test_selftest_constants() -> None:
    """Mock domain geometry and the magic type values of the selftest ABI."""
    assert u.MOCK_APERTURE_START == 1 << 24
    assert u.MOCK_APERTURE_LAST == (1 << 31) - 1
    assert u.MOCK_HUGE_PAGE_SIZE == 512 * u.MOCK_PAGE_SIZE
    assert u.IOMMU_TEST_OP_ADD_RESERVED == 1
    assert u.IOMMU_TEST_OP_DMABUF_REVOKE == 23
    assert u.IOMMU_HW_INFO_TYPE_SELFTEST == 0xFEEDBEEF
    assert u.IOMMU_HWPT_DATA_SELFTEST == 0xDEAD
    assert u.IOMMU_VEVENTQ_TYPE_SELFTEST == 0xBEEFBEEF
    assert u.IOMMU_TEST_HW_QUEUE_MAX == 2


def test_enumerators_read_back_from_the_cdef() -> None:
    """enumerators() is the cdef's enum; NONE and DEFAULT of hw_info_type share 0."""
    assert u.enumerators("iommufd_ioas_map_flags") == {
        "IOMMU_IOAS_MAP_FIXED_IOVA": 1,
        "IOMMU_IOAS_MAP_WRITEABLE": 2,
        "IOMMU_IOAS_MAP_READABLE": 4,
    }
    hw_info = u.enumerators("iommu_hw_info_type")
    assert hw_info["IOMMU_HW_INFO_TYPE_NONE"] == hw_info["IOMMU_HW_INFO_TYPE_DEFAULT"] == 0
    assert "iommu_hwpt_data_type" in u.ENUM_TAGS
    assert all(tag.startswith(u.ANON_ENUM_PREFIX) for tag in u.ENUM_TAGS
               if "test_op" in tag or "mock" in tag)


# ---- layout.fields ----


def _fields(struct: str) -> dict[str, FieldInfo]:
    return {info.path: info for info in layout.fields(struct)}


def test_layout_iommu_test_cmd_header_and_last() -> None:
    """The common header, then the union at 16, then `last` at 64."""
    fields = layout.fields("struct iommu_test_cmd")
    assert [f.path for f in fields[:4]] == ["size", "op", "id", "__reserved"]
    assert [f.offset for f in fields[:4]] == [0, 4, 8, 12]
    assert fields[-1] == FieldInfo("last", 64, 4, "uint32_t", False)


def test_layout_iommu_test_cmd_dotted_union_members() -> None:
    """Members of the untagged per-op structs are dotted paths; offsets count from the start."""
    fields = _fields("struct iommu_test_cmd")
    # The untagged struct member itself comes first, then its members.
    paths = list(fields)
    assert paths.index("mock_domain") + 1 == paths.index("mock_domain.out_stdev_id")
    assert fields["mock_domain"].offset == 16 and fields["mock_domain"].size == 12
    assert fields["mock_domain"].signed is None
    assert fields["mock_domain.out_stdev_id"].offset == 16
    assert fields["mock_domain.out_hwpt_id"] == FieldInfo(
        "mock_domain.out_hwpt_id", 20, 4, "uint32_t", False)
    assert fields["mock_domain.out_idev_id"].offset == 24
    assert fields["mock_domain_flags.dev_flags"].offset == 28
    assert fields["add_reserved.length"].offset == 24
    # dirty.iova sits after 4 bytes of padding: u64 alignment inside the union member.
    assert fields["dirty.flags"].offset == 16
    assert fields["dirty.iova"].offset == 24
    assert fields["dirty.out_nr_dirty"].offset == 56
    assert fields["dirty"].size == 48
    assert fields["dmabuf_revoke.dmabuf_fd"].signed is True
    assert fields["dmabuf_revoke.revoked"].signed is False
    # Every union member starts where the union does.
    tops = [f for f in fields.values() if "." not in f.path and "$" in f.ctype]
    assert len(tops) == 23
    assert {f.offset for f in tops} == {16}
    assert max(f.size or 0 for f in tops) == 48


def test_layout_dotted_paths_work_with_cffi() -> None:
    """The paths are real designators: ffi.offsetof and attribute access accept them."""
    for info in layout.fields("struct iommu_test_cmd"):
        assert u.ffi.offsetof("struct iommu_test_cmd", *info.path.split(".")) == info.offset
    cmd = u.ffi.new("struct iommu_test_cmd *")
    cmd.mock_domain.out_hwpt_id = 7
    raw = bytes(u.ffi.buffer(cmd))
    assert int.from_bytes(raw[20:24], "little") == 7


def test_layout_anonymous_union_flexible_array_pointer() -> None:
    """Anonymous union members by their own names; a flexible array has no size."""
    hw_info = _fields("struct iommu_hw_info")
    assert hw_info["in_data_type"].offset == hw_info["out_data_type"].offset == 24
    assert hw_info["__reserved"] == FieldInfo("__reserved", 29, 3, "uint8_t[3]", False)
    assert hw_info["out_capabilities"].offset == 32

    iova_cap = _fields("struct vfio_iommu_type1_info_cap_iova_range")
    assert iova_cap["header"].size == 8 and iova_cap["header"].signed is None
    assert iova_cap["iova_ranges"].offset == 16 and iova_cap["iova_ranges"].size is None

    bitmap = _fields("struct vfio_bitmap")
    assert bitmap["data"].size == 8 and bitmap["data"].signed is None

    assert _fields("struct iommu_ioas_map_file")["fd"].signed is True


def test_layout_struct_names() -> None:
    """Every declared struct is listed, with its kernel tag."""
    names = layout.struct_names()
    assert len(names) == len(set(names)) >= 55
    for name in ("struct iommu_test_cmd", "struct iommu_ioas_map", "struct vfio_bitmap",
                 "struct iommu_viommu_event_selftest"):
        assert name in names
    assert all(not name.split(" ", 1)[1].startswith("$") for name in names)
