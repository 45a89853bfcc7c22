"""Splat detection on console text, the pexpect console watcher, and the kernel-log monitor."""

from __future__ import annotations

import sys
import textwrap

import pexpect
import pytest

from backends.qemu.console import ConsoleWatcher
from backends.qemu.kmsg import KmsgMonitor, record_text
from backends.qemu.splats import SplatDetector, classify
from tests.framework.qemu_fakes import PANIC_SPLAT, WARN_SPLAT

NULL_DEREF = """\
[    5.000000] iommufd: something before
[    5.100000] BUG: kernel NULL pointer dereference, address: 0000000000000010
[    5.100100] #PF: supervisor read access in kernel mode
[    5.100200] Oops: Oops: 0000 [#1] SMP NOPTI
[    5.100300] RIP: 0010:iommufd_device_bind+0x10/0x200
[    5.100400] ---[ end trace 0000000000000000 ]---
[    5.100500] Kernel panic - not syncing: Fatal exception
[    5.100600] ---[ end Kernel panic - not syncing: Fatal exception ]---
"""

ARM64_OOPS = """\
[    7.000000] Unable to handle kernel paging request at virtual address dead000000000108
[    7.000100] Internal error: Oops: 0000000096000044 [#1] SMP
[    7.000200] pc : iopt_area_unmap_domain+0x3c/0x90
[    7.000300] ---[ end trace 0000000000000000 ]---
"""

HUNG_TASK = """\
[  245.000000] INFO: task python3:85 blocked for more than 122 seconds.
[  245.000100]       Not tainted 7.3.4 #1
"""

PANIC_ON_WARN = WARN_SPLAT + """\
[   20.101000] Kernel panic - not syncing: kernel: panic_on_warn set ...
[   20.101100] ---[ end Kernel panic - not syncing: kernel: panic_on_warn set ... ]---
"""


def _detect(text):
    detector = SplatDetector(context=3)
    for line in text.splitlines():
        detector.feed(line)
    return detector


def test_panic():
    splat = _detect("[    1.0] booting\n" + PANIC_SPLAT).splat
    assert splat.kind == "panic" and splat.complete
    assert splat.summary == "Kernel panic - not syncing: sysrq triggered crash"
    assert splat.lines[0] == "[    1.0] booting"  # context before the splat
    assert "---[ end Kernel panic - not syncing: sysrq triggered crash ]---" in splat.lines[-1]


def test_warning_summary_is_the_warning_line_not_cut_here():
    splat = _detect(WARN_SPLAT).splat
    assert splat.kind == "warning" and splat.complete
    assert splat.summary.startswith("WARNING: CPU: 0 PID: 85 at drivers/iommu/iommufd/")
    assert "------------[ cut here ]------------" in splat.excerpt


def test_bug_then_oops_then_panic_keeps_the_bug_line():
    detector = _detect(NULL_DEREF)
    splat = detector.splat
    assert splat.summary == "BUG: kernel NULL pointer dereference, address: 0000000000000010"
    assert splat.kind == "panic"  # the end trace came, then the Fatal exception panic
    assert "Kernel panic - not syncing: Fatal exception" in splat.excerpt


def test_arm64_oops_and_hung_task():
    assert _detect(ARM64_OOPS).splat.kind == "oops"
    hang = _detect(HUNG_TASK)
    assert hang.splat.kind == "hang" and not hang.complete
    hang.finish()
    assert hang.complete


def test_panic_on_warn_escalates():
    splat = _detect(PANIC_ON_WARN).splat
    assert splat.kind == "panic" and splat.summary.startswith("WARNING: CPU: 0")


@pytest.mark.parametrize("line", [
    "[    0.5] iommufd: IOMMUFD is available",
    "[    3.0] DMAR: dmar0: Using Queued invalidation",
    "ok 7 iommufd_ioas.mock_domain.ioas_destroy",
    "# WARNING_TEST not a kernel warning",
])
def test_ordinary_lines_are_not_splats(line):
    assert classify(line) is None


def _watch(tmp_path, text, **kwargs):
    script = f"import sys, time\nsys.stdout.write({text!r})\nsys.stdout.flush()\ntime.sleep(30)\n"
    child = pexpect.spawn(sys.executable, ["-c", script], timeout=None)
    seen = []
    watcher = ConsoleWatcher(child, tmp_path / "console.log", on_splat=seen.append, **kwargs)
    watcher.start()
    return child, watcher, seen


def test_watcher_reports_a_completed_splat_and_logs_everything(tmp_path):
    child, watcher, seen = _watch(tmp_path, "boot line\r\n" + WARN_SPLAT.replace("\n", "\r\n"))
    try:
        assert watcher.splat_done.wait(10)
        assert seen and seen[0].kind == "warning"
        assert "boot line" in watcher.tail() and "\r" not in watcher.tail()
    finally:
        child.close(force=True)
    watcher.join(5)
    assert watcher.eof.is_set()
    assert "iopt_unmap_iova" in (tmp_path / "console.log").read_text()


def test_watcher_ends_a_splat_that_goes_quiet(tmp_path):
    child, watcher, _seen = _watch(tmp_path, HUNG_TASK, quiet=0.3)
    try:
        assert watcher.splat_done.wait(10)
        assert watcher.splat.kind == "hang" and watcher.splat.complete
    finally:
        child.close(force=True)


def test_watcher_finishes_at_eof(tmp_path):
    child = pexpect.spawn(sys.executable, ["-c", f"print({PANIC_SPLAT[:120]!r})"], timeout=None)
    watcher = ConsoleWatcher(child, tmp_path / "console.log")
    watcher.start()
    watcher.join(10)
    assert watcher.eof.is_set() and watcher.splat_done.is_set()
    assert watcher.splat.kind == "panic"
    child.close()


def test_kmsg_records_and_plain_lines(tmp_path):
    warning = "WARNING: CPU: 1 PID: 9 at x"
    assert record_text(f"4,1234,5678901,-;{warning}") == warning
    assert record_text("[ 1.0] plain; line") == "[ 1.0] plain; line"
    log = tmp_path / "kmsg"
    log.write_text("6,1,1,-;old WARNING: CPU: 0 PID: 1 at ignored\n")
    monitor = KmsgMonitor(str(log))
    assert monitor.poll() is None  # what was there before opening is not ours
    with open(log, "a") as f:
        f.write(textwrap.dedent("""\
            6,2,2,-;iommufd: fine
             SUBSYSTEM=pci
            4,3,3,-;------------[ cut here ]------------
            4,4,4,-;WARNING: CPU: 0 PID: 85 at drivers/iommu/iommufd/main.c:1 f
            """))
    assert monitor.poll() == "------------[ cut here ]------------"
    assert monitor.poll() is None
    monitor.close()
