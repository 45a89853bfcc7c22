"""Tests of vm_images: config fragments, cache keys, QEMU command lines, the guest's /init.

The unit tests build nothing and boot nothing (milliseconds). The end-to-end tests
at the bottom are marked ``slow`` (run them with ``-m slow``): they build (or reuse)
the real guest images and boot them under QEMU.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vm_images import console, cpio
from vm_images.arch import AARCH64, ARCHES, X86_64, agent_channel_args, get_arch
from vm_images.cache import CACHE_ENV, build_once, cached_result, input_key, prune_entries
from vm_images.cli import main as cli_main
from vm_images.debian import deb_version, parse_madison
from vm_images.elf import MACHINES, missing_libraries, read_elf
from vm_images.initramfs import INIT, initramfs_key
from vm_images.kconfig import ConfigMismatchError, missing_options, parse_config, verify_config
from vm_images.kernel import fragment_options, kernel_key, slot_key
from vm_images.kernel_source import KernelSource, local_source, tree_fingerprint
from vm_images.runtime import source_digest
from vm_images.steps import Reporter, StepError
from vm_images.userspace import userspace_key

# --------------------------------------------------------------------------- fragments

#: What the issue asks every guest kernel to have, whatever the architecture.
COMMON_OPTIONS = (
    "IOMMUFD", "IOMMUFD_TEST", "FAULT_INJECTION", "FAILSLAB", "FAIL_PAGE_ALLOC",
    "FAULT_INJECTION_DEBUG_FS", "VFIO", "VFIO_DEVICE_CDEV", "VFIO_PCI", "VIRTIO_CONSOLE",
    "VIRTIO_PCI", "DEVTMPFS", "PROC_FS", "SYSFS", "DEBUG_FS", "TRANSPARENT_HUGEPAGE",
    "HUGETLBFS", "MEMFD_CREATE", "IOMMU_PT_AMDV1", "DEBUG_KERNEL", "RUNTIME_TESTING_MENU",
    "IOMMUFD_VFIO_CONTAINER", "SYSCTL", "BLK_DEV_INITRD", "RD_GZIP",
)
ARCH_OPTIONS = {
    "x86_64": ("INTEL_IOMMU", "ACPI", "PCI_MSI", "SERIAL_8250_CONSOLE"),
    "aarch64": ("ARM_SMMU_V3", "ARM_SMMU_V3_SVA", "VFIO_NOIOMMU", "ARM64_VA_BITS_48",
                "ARM_GIC_V3_ITS", "PCI_HOST_GENERIC", "SERIAL_AMBA_PL011_CONSOLE"),
}


@pytest.mark.parametrize("name", sorted(ARCHES))
def test_fragment_asks_for_everything_the_guest_needs(name: str) -> None:
    options = parse_config(ARCHES[name].config_fragment.read_text())
    for option in (*COMMON_OPTIONS, *ARCH_OPTIONS[name]):
        assert options.get(f"CONFIG_{option}") == "y", option
    # These two exclude each other; iommufd's emulation is the one under test.
    assert options["CONFIG_VFIO_CONTAINER"] == "n"


def test_parse_config_reads_values_not_set_lines_and_skips_comments() -> None:
    text = ("# a comment\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"str\"\n\n"
            "CONFIG_D=4\nCONFIG_A=m\n")
    assert parse_config(text) == {"CONFIG_A": "m", "CONFIG_B": "n", "CONFIG_C": '"str"',
                                  "CONFIG_D": "4"}


def test_missing_options_names_each_option_that_did_not_land() -> None:
    fragment = parse_config("CONFIG_IOMMUFD=y\nCONFIG_IOMMUFD_TEST=y\nCONFIG_VT=n\n"
                            "CONFIG_NR_CPUS=8\nCONFIG_INPUT=n\n")
    dot_config = parse_config("CONFIG_IOMMUFD=y\n# CONFIG_IOMMUFD_TEST is not set\n"
                              "CONFIG_VT=y\nCONFIG_NR_CPUS=4\n")
    wrong = missing_options(fragment, dot_config)
    assert [str(m) for m in wrong] == [
        "CONFIG_IOMMUFD_TEST=y (got: not set)",
        "CONFIG_VT=n (got: y)",
        "CONFIG_NR_CPUS=8 (got: 4)",
    ]


def test_verify_config_raises_naming_the_missing_options(tmp_path: Path) -> None:
    fragment = tmp_path / "frag.config"
    fragment.write_text("CONFIG_IOMMUFD=y\nCONFIG_IOMMUFD_TEST=y\nCONFIG_FAILSLAB=y\n")
    dot_config = tmp_path / ".config"
    dot_config.write_text("CONFIG_IOMMUFD=y\nCONFIG_FAILSLAB=y\n")
    with pytest.raises(ConfigMismatchError) as info:
        verify_config(fragment, dot_config)
    assert "CONFIG_IOMMUFD_TEST=y (got: absent)" in str(info.value)
    assert "1 option(s)" in str(info.value)
    assert [m.option for m in info.value.wrong] == ["CONFIG_IOMMUFD_TEST"]
    dot_config.write_text("CONFIG_IOMMUFD=y\nCONFIG_IOMMUFD_TEST=y\nCONFIG_FAILSLAB=y\n")
    verify_config(fragment, dot_config)  # all there: no error


# --------------------------------------------------------------------------- cache keys

def _source(identity: str = "debian:linux-source-7.3_7.3.4_all.deb",
            slot: str | None = None) -> KernelSource:
    return KernelSource(Path("/src"), identity, slot or identity, "test source")


def test_fragment_comments_do_not_change_the_kernel_key(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    a.write_text("CONFIG_IOMMUFD=y\nCONFIG_VT=n\n")
    b.write_text("# why we want iommufd\nCONFIG_IOMMUFD=y\n\n# trims\nCONFIG_VT=n\n")
    c.write_text("CONFIG_IOMMUFD=y\nCONFIG_VT=y\n")
    keys = [slot_key(X86_64, _source(), fragment_options(f), "gcc 12") for f in (a, b, c)]
    assert keys[0] == keys[1] != keys[2]


def test_kernel_slot_key_changes_with_each_input() -> None:
    base = slot_key(X86_64, _source(), "CONFIG_A=y", "gcc 12")
    assert base == slot_key(X86_64, _source(), "CONFIG_A=y", "gcc 12")
    variants = {
        slot_key(AARCH64, _source(), "CONFIG_A=y", "gcc 12"),
        slot_key(X86_64, _source("debian:linux-source-7.3_7.3.5_all.deb"), "CONFIG_A=y",
                 "gcc 12"),
        slot_key(X86_64, _source(), "CONFIG_A=n", "gcc 12"),
        slot_key(X86_64, _source(), "CONFIG_A=y", "gcc 13"),
    }
    assert base not in variants and len(variants) == 4


def test_local_tree_edits_keep_the_build_slot_but_change_the_kernel_key() -> None:
    before = _source("local:7.3.4:aaaa", "local:/home/me/linux")
    after = _source("local:7.3.4:bbbb", "local:/home/me/linux")
    slot_a = slot_key(X86_64, before, "CONFIG_A=y", "gcc")
    slot_b = slot_key(X86_64, after, "CONFIG_A=y", "gcc")
    assert slot_a == slot_b  # same build directory: make rebuilds incrementally
    assert kernel_key(slot_a, before) != kernel_key(slot_b, after)


def _fake_kernel_tree(root: Path) -> Path:
    (root / "drivers/iommu/iommufd").mkdir(parents=True)
    (root / "Makefile").write_text("VERSION = 7\nPATCHLEVEL = 3\nSUBLEVEL = 4\nEXTRAVERSION =\n")
    (root / "Kconfig").write_text("")
    (root / "drivers/iommu/iommufd/selftest.c").write_text("int x;\n")
    return root


def test_local_source_fingerprint_sees_an_edit_deep_in_the_tree(tmp_path: Path) -> None:
    tree = _fake_kernel_tree(tmp_path / "linux")
    first = local_source(tree)
    assert first.identity.startswith("local:7.3.4:")
    assert first.slot == f"local:{tree}"
    deep = tree / "drivers/iommu/iommufd/selftest.c"
    deep.write_text("int x = 1;\n")
    os.utime(deep, ns=(1, 1))
    assert tree_fingerprint(tree) != first.identity.rsplit(":", 1)[1]
    assert local_source(tree).identity != first.identity


def test_local_source_rejects_what_is_not_a_clean_kernel_tree(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a kernel source tree"):
        local_source(tmp_path)
    tree = _fake_kernel_tree(tmp_path / "linux")
    (tree / ".config").write_text("")
    with pytest.raises(ValueError, match="make mrproper"):
        local_source(tree)


def test_input_key_is_stable_and_length_prefixed() -> None:
    assert input_key(["ab", "c"]) == input_key(["ab", "c"])
    assert input_key(["ab", "c"]) != input_key(["a", "bc"])
    assert input_key([b"x"]) == input_key(["x"])
    assert len(input_key(["x"])) == 16


def test_initramfs_key_changes_with_each_part_but_not_with_the_kernel() -> None:
    parts = ("user", "self", "runtime", "init")
    base = initramfs_key(X86_64, *parts)
    for i in range(len(parts)):
        changed = list(parts)
        changed[i] += "-edited"
        assert initramfs_key(X86_64, *changed) != base
    assert initramfs_key(AARCH64, *parts) != base


def test_userspace_key_follows_package_versions() -> None:
    versions = {"python3.11-minimal:arm64": "3.11.2-6+deb12u8", "libc6:arm64": "2.36-9"}
    same = dict(reversed(list(versions.items())))
    newer = {**versions, "libc6:arm64": "2.36-10"}
    assert userspace_key(AARCH64, versions) == userspace_key(AARCH64, same)
    assert userspace_key(AARCH64, versions) != userspace_key(AARCH64, newer)
    assert userspace_key(AARCH64, versions) != userspace_key(X86_64, versions)


def test_runtime_digest_follows_project_file_contents(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    for package in ("uapi_headers", "backends"):
        (checkout / package).mkdir(parents=True)
        (checkout / package / "__init__.py").write_text("")
    agent = checkout / "backends" / "agent.py"
    agent.write_text("print('v1')\n")
    first = source_digest(checkout)
    (checkout / "backends" / "__pycache__").mkdir()
    (checkout / "backends" / "__pycache__" / "agent.cpython-311.pyc").write_bytes(b"junk")
    os.utime(agent, ns=(5, 5))
    assert source_digest(checkout) == first  # bytecode and file times are not inputs
    agent.write_text("print('v2')\n")
    assert source_digest(checkout) != first


def test_build_once_builds_once_and_redoes_an_interrupted_entry(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    calls: list[Path] = []

    def build(entry: Path) -> dict[str, object]:
        calls.append(entry)
        (entry / "artifact").write_text("built")
        return {"artifact": str(entry / "artifact")}

    data, hit = build_once("thing", "k1", build)
    assert not hit and Path(str(data["artifact"])).read_text() == "built"
    again, hit = build_once("thing", "k1", build)
    assert hit and again == data and len(calls) == 1
    # An entry whose build died before result.json is not a hit.
    (tmp_path / "thing" / "k2").mkdir(parents=True)
    assert cached_result("thing", "k2") is None
    _, hit = build_once("thing", "k2", build)
    assert not hit and len(calls) == 2


def test_prune_entries_keeps_the_newest_finished_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    for i, key in enumerate(["old", "mid", "new"]):
        build_once("img", key, lambda entry: {})
        os.utime(tmp_path / "img" / key / "result.json", (i, i))
    build_once("img", "young", lambda entry: {})  # beyond `keep` but not min_age old
    young = time.time() - 10
    os.utime(tmp_path / "img" / "young" / "result.json", (young, young))
    build_once("img", "newest", lambda entry: {})
    (tmp_path / "img" / "building").mkdir()  # no result.json: a build in progress
    removed = prune_entries("img", 1)
    assert sorted(p.name for p in removed) == ["mid", "new", "old"]
    assert sorted(p.name for p in (tmp_path / "img").iterdir()) == ["building", "newest",
                                                                    "young"]


# --------------------------------------------------------------------------- QEMU argv

def test_x86_64_qemu_argv() -> None:
    argv = X86_64.qemu_argv(Path("/k/bzImage"), Path("/k/initrd.gz"),
                            append=["iommufd.mode=selftests"], extra=["-device", "edu"])
    assert argv[0] == "qemu-system-x86_64"
    joined = " ".join(argv)
    for piece in ("-M q35", "-cpu max", "-accel tcg", "-device intel-iommu", "-no-reboot",
                  "-serial mon:stdio", "-display none", "-kernel /k/bzImage",
                  "-initrd /k/initrd.gz", "-smp 2", "-m 2G"):
        assert piece in joined, piece
    cmdline = argv[argv.index("-append") + 1].split()
    assert cmdline[:3] == ["console=ttyS0", "panic=-1", "intel_iommu=on"]
    assert cmdline[-1] == "iommufd.mode=selftests"
    assert argv[-2:] == ["-device", "edu"]  # extra comes last, after the IOMMU


def test_aarch64_qemu_argv() -> None:
    argv = AARCH64.qemu_argv(Path("/k/Image"), Path("/k/initrd.gz"), memory="1G", smp=4)
    assert argv[0] == "qemu-system-aarch64"
    assert argv[argv.index("-M") + 1] == "virt,iommu=smmuv3,gic-version=3"
    assert argv[argv.index("-cpu") + 1] == "max,pauth-impdef=on"
    assert argv[argv.index("-m") + 1] == "1G" and argv[argv.index("-smp") + 1] == "4"
    assert "-no-reboot" in argv and "intel-iommu" not in argv
    cmdline = argv[argv.index("-append") + 1].split()
    assert cmdline == ["console=ttyAMA0", "panic=-1"]


def test_agent_channel_args_name_the_port_the_init_links() -> None:
    extra = agent_channel_args("/tmp/agent.sock")
    assert "virtio-serial-pci" in extra
    assert any("path=/tmp/agent.sock,server=on,wait=off" in a for a in extra)
    assert any(a.endswith("name=org.iommufd.agent") for a in extra)
    assert "org.iommufd.agent" in INIT.read_text()


def test_kvm_is_opt_in_and_refused_for_a_foreign_guest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IOMMUFD_QEMU_ACCEL", raising=False)
    assert "tcg" in X86_64.qemu_argv(Path("k"), Path("i"))
    monkeypatch.setenv("IOMMUFD_QEMU_ACCEL", "kvm")
    foreign = AARCH64 if X86_64.host_native else X86_64
    with pytest.raises(ValueError, match="accel kvm"):
        foreign.qemu_argv(Path("k"), Path("i"))
    monkeypatch.setenv("IOMMUFD_QEMU_ACCEL", "hvf")
    with pytest.raises(ValueError, match="expected 'tcg' or 'kvm'"):
        X86_64.qemu_argv(Path("k"), Path("i"))


def test_get_arch_accepts_debian_names_and_rejects_others() -> None:
    assert get_arch("arm64") is AARCH64 and get_arch("x86_64") is X86_64
    with pytest.raises(ValueError, match="unknown architecture"):
        get_arch("riscv64")


# --------------------------------------------------------------------------- /init

def _init_param(tmp_path: Path, cmdline: str, name: str, default: str) -> str:
    """Run /init's own ``param`` shell function against a fake /proc/cmdline."""
    body = re.search(r"^param\(\) \{.*?^\}", INIT.read_text(), re.S | re.M)
    assert body is not None
    (tmp_path / "cmdline").write_text(cmdline + "\n")
    script = f'CMDLINE_FILE="{tmp_path / "cmdline"}"\n{body.group(0)}\nparam "$1" "$2"\n'
    out = subprocess.run(["sh", "-c", script, "sh", name, default], capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def test_init_reads_its_parameters_from_the_kernel_cmdline(tmp_path: Path) -> None:
    cmdline = X86_64.kernel_cmdline(["iommufd.mode=exec", "iommufd.exec=ZWNobyBoaQ=="])
    assert _init_param(tmp_path, cmdline, "iommufd.mode", "agent") == "exec"
    assert _init_param(tmp_path, cmdline, "iommufd.exec", "") == "ZWNobyBoaQ=="
    assert _init_param(tmp_path, cmdline, "iommufd.hugepages", "64") == "64"
    assert _init_param(tmp_path, "console=ttyS0 panic=-1", "iommufd.mode", "agent") == "agent"
    # As the kernel does, the last occurrence wins; a longer name is not a match.
    later = "iommufd.mode=shell iommufd.modex=1 iommufd.mode=selftests"
    assert _init_param(tmp_path, later, "iommufd.mode", "agent") == "selftests"
    assert console.parse_cmdline(later)["iommufd.mode"] == "selftests"


def test_init_runs_the_agent_module_on_the_agent_port() -> None:
    text = INIT.read_text()
    assert text.startswith("#!/bin/busybox sh\n")
    assert 'python3 -m backends.qemu.agent "/dev/virtio-ports/$port"' in text
    assert "poweroff -f" in text
    for mode in ("agent)", "shell)", "selftests)", "exec)"):
        assert mode in text


def test_parse_cmdline() -> None:
    assert console.parse_cmdline("console=ttyS0 quiet a=b=c") == {
        "console": "ttyS0", "quiet": "", "a": "b=c"}


# --------------------------------------------------------------------------- console

RECORDED = """\
iommufd-harness: running /selftests/iommufd
TAP version 13
1..246
ok 1 iommufd.simple_close
not ok 40 iommufd_ioas.no_domain.dmabuf_simple
# Totals: pass:233 fail:8 xfail:0 xpass:0 skip:5 error:0
iommufd-harness: iommufd exited with status 1
iommufd-harness: running /selftests/iommufd_fail_nth
# Totals: pass:8 fail:0 xfail:0 xpass:0 skip:0 error:0\r
iommufd-harness: exec status 3
"""


def test_parse_totals_attributes_each_to_its_program() -> None:
    totals = console.parse_totals(RECORDED.splitlines(keepends=True))
    assert [(t.program, t.cases) for t in totals] == [("iommufd", 246),
                                                      ("iommufd_fail_nth", 8)]
    assert totals[0].counts["fail"] == 8 and totals[0].counts["skip"] == 5
    assert str(totals[1]).startswith("iommufd_fail_nth: 8 cases (pass:8")


def test_program_statuses() -> None:
    assert console.program_statuses(RECORDED.splitlines()) == {"iommufd": 1}


def test_exec_status() -> None:
    assert console.exec_status(RECORDED.splitlines()) == 3
    assert console.exec_status(["no status here"]) is None


# --------------------------------------------------------------------------- cpio

def _read_newc(data: bytes) -> list[tuple[str, int, bytes, tuple[int, int]]]:
    """A minimal newc reader: (name, mode, data, (rdevmajor, rdevminor)) per member."""
    members: list[tuple[str, int, bytes, tuple[int, int]]] = []
    pos = 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = data[pos + 110:pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        if name == cpio.TRAILER:
            return members
        members.append((name, mode, data[pos:pos + size], (fields[9], fields[10])))
        pos += size
        pos += -pos % 4


def test_cpio_archive_round_trips(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    (layer / "usr/bin").mkdir(parents=True)
    (layer / "usr/bin/tool").write_bytes(b"#!/bin/sh\n")
    (layer / "usr/bin/tool").chmod(0o755)
    (layer / "usr/bin/alias").symlink_to("tool")
    (layer / "etc").mkdir()
    (layer / "etc/conf").write_text("from layer")
    out = io.BytesIO()
    cpio.write_cpio(out, [cpio.directory("dev"), cpio.char_device("dev/console", 5, 1),
                          *cpio.tree(layer), cpio.file("etc/conf", b"override"),
                          cpio.file("init", b"#!init", 0o755)])
    members = {name: (mode, body, rdev) for name, mode, body, rdev in _read_newc(out.getvalue())}
    names = list(members)
    assert names.index("usr") < names.index("usr/bin") < names.index("usr/bin/tool")
    assert members["etc/conf"][1] == b"override"  # later entries win
    assert stat.S_ISCHR(members["dev/console"][0]) and members["dev/console"][2] == (5, 1)
    assert stat.S_ISLNK(members["usr/bin/alias"][0]) and members["usr/bin/alias"][1] == b"tool"
    assert members["usr/bin/tool"][0] == stat.S_IFREG | 0o755
    assert members["init"][1] == b"#!init"
    again = io.BytesIO()
    cpio.write_cpio(again, [cpio.directory("dev"), cpio.char_device("dev/console", 5, 1),
                            *cpio.tree(layer), cpio.file("etc/conf", b"override"),
                            cpio.file("init", b"#!init", 0o755)])
    assert again.getvalue() == out.getvalue()  # reproducible


# --------------------------------------------------------------------------- ELF

def test_read_elf_of_the_host_python() -> None:
    info = read_elf(Path(os.path.realpath(sys.executable)))
    assert info.machine == MACHINES.get(os.uname().machine, info.machine)
    assert not info.is_static and info.interpreter is not None
    assert any(so.startswith("libc.so") for so in info.needed)


def test_missing_libraries_names_the_file_and_library(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    shutil.copy(os.path.realpath(sys.executable), root / "usr/bin/python")
    missing = missing_libraries(root, ["/lib", "/usr/lib"])
    assert list(missing) == ["usr/bin/python"]
    needed = read_elf(root / "usr/bin/python").needed
    assert set(missing["usr/bin/python"]) >= set(needed)


# --------------------------------------------------------------------------- debian

def test_parse_madison_keeps_wanted_packages_newest_first() -> None:
    mirror = "http://deb.debian.org/debian bookworm/main"
    out = (f"   libc6 | 2.36-9+deb12u14 | {mirror} arm64 Packages\n"
           f"   libc6 | 2.36-9+deb12u13 | {mirror} arm64 Packages\n"
           f"python3-cffi | 1.15.1-5 | {mirror} all Packages\n"
           f"   other | 1 | {mirror} arm64 Packages\n")
    found = parse_madison(out, ["libc6:arm64", "python3-cffi:arm64"], "arm64")
    assert found == {"libc6:arm64": ["2.36-9+deb12u14", "2.36-9+deb12u13"],
                     "python3-cffi:arm64": ["1.15.1-5"]}
    assert deb_version(Path("busybox-static_1%3a1.35.0-4_arm64.deb")) == "1:1.35.0-4"


# --------------------------------------------------------------------------- steps, CLI

def test_a_failing_step_names_itself_and_its_log(tmp_path: Path) -> None:
    lines: list[str] = []
    report = Reporter("kernel x86_64", lines.append)
    log = tmp_path / "logs" / "kernel.log"
    with pytest.raises(StepError) as info:
        report.run("make bzImage", ["sh", "-c", "echo compiling; echo 'error: boom'; exit 3"],
                   log)
    message = str(info.value)
    assert message.startswith(f"kernel x86_64: make bzImage failed; log: {log}")
    assert "exit 3" in message and "error: boom" in message
    assert info.value.log == log and info.value.step == "kernel x86_64: make bzImage"
    assert lines == [f"[kernel x86_64] make bzImage ... (log: {log})"]


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["build", "--arch", "riscv64"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'riscv64'" in err
    assert cli_main(["boot", "--kernel-src", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a directory" in err
    assert cli_main(["build", "--kernel-src", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a kernel source tree" in err.splitlines()[-1]
    assert cli_main(["exec", "--arch", "x86_64"]) == 2
    assert "no command given" in capsys.readouterr().err
    assert cli_main([]) == 2
    assert capsys.readouterr().err.count("\n") == 1


# --------------------------------------------------------------------------- end to end

def _run_cli(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[2]
    return subprocess.run([sys.executable, "-m", "vm_images.cli", *args], cwd=root,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
@pytest.mark.slow
def test_e2e_kernel_selftests_run_in_the_guest(arch: str) -> None:
    proc = _run_cli("boot", "--arch", arch)
    assert proc.returncode == 0, proc.stderr[-2000:]
    totals = {t.program: t for t in console.parse_totals(proc.stdout.splitlines())}
    assert totals["iommufd"].cases == 246
    # Stock 7.3.4: the 8 dmabuf failures are a kernel bug (see shared/reference).
    failed = re.findall(r"^not ok \d+ (\S+)", proc.stdout, re.M)
    assert all(".dmabuf_" in name for name in failed if "fail_nth" not in name), failed
    assert totals["iommufd_fail_nth"].counts == {"pass": 8, "fail": 0, "xfail": 0,
                                                 "xpass": 0, "skip": 0, "error": 0}


GUEST_CHECK = """\
import fcntl, os, cffi, _cffi_backend, uapi_headers as u, backends
fd = os.open("/dev/iommu", os.O_RDWR)
c = u.ffi.new("struct iommu_ioas_alloc *")
c.size = u.ffi.sizeof(c[0])
fcntl.ioctl(fd, u.IOMMU_IOAS_ALLOC, u.ffi.buffer(c))
print("guest-check", os.uname().machine, cffi.__version__, c.out_ioas_id)
"""


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
@pytest.mark.slow
def test_e2e_python_and_cffi_drive_dev_iommu_in_the_guest(arch: str) -> None:
    proc = _run_cli("exec", "--arch", arch, "--", "python3", "-c", GUEST_CHECK)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]
    assert f"guest-check {arch} 1.15.1 1" in proc.stdout


@pytest.mark.slow
def test_e2e_shell_mode_with_pexpect() -> None:
    pexpect = pytest.importorskip("pexpect")
    root = Path(__file__).resolve().parents[2]
    child = pexpect.spawn(sys.executable, ["-m", "vm_images.cli", "shell", "--arch", "x86_64"],
                          cwd=str(root), timeout=120, encoding="utf-8")
    try:
        child.expect("guest:/# ")
        child.sendline("python3 -c 'import cffi, _cffi_backend; print(\"cffi\", 6 * 7)'")
        child.expect("cffi 42")
        child.expect("guest:/# ")
        child.sendline("poweroff -f")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


@pytest.mark.slow
def test_e2e_second_build_is_a_cache_hit() -> None:
    from vm_images.image import ensure_guest_image

    first = ensure_guest_image("x86_64", progress=lambda _: None)
    lines: list[str] = []
    start = time.monotonic()
    second = ensure_guest_image("x86_64", progress=lines.append)
    assert time.monotonic() - start < 5
    assert second == first
    steps = [line for line in lines if not line.startswith("[image")]
    assert steps and all("cached: " in line for line in steps), lines
