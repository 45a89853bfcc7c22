"""``python3 -m vm_images.cli build|boot|shell|exec``: build and boot the test guests.

  build   build (or find in the cache) the kernel and initramfs; print their paths
          and how long it took
  boot    boot with iommufd.mode=selftests: the kernel's C selftests run in the guest,
          their TAP goes to stdout; exit with QEMU's status
  shell   an interactive shell on the guest's console (Ctrl-A x quits QEMU)
  exec    run one shell command in the guest (iommufd.mode=exec); exit with its status;
          ``--put FILE`` (repeatable) makes FILE executable at /put/<name> in the guest

``iommufd-harness vm ...`` delegates here. Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from vm_images import console, cpio, qemu_run
from vm_images.arch import ARCHES
from vm_images.cache import CACHE_ENV
from vm_images.image import GuestImage, ensure_guest_image
from vm_images.selftests import IOMMU_PROGRAMS
from vm_images.steps import StepError

#: The guest's command line has room for about 2 KiB; a base64 command must fit.
MAX_EXEC_BYTES = 1024


class UsageError(Exception):
    """Bad command line input (reported in one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit 2) instead of the usage text."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _default_arch() -> str:
    machine = platform.machine()
    return machine if machine in ARCHES else "x86_64"


def build_parser(prog: str = "python3 -m vm_images.cli") -> argparse.ArgumentParser:
    """The argument parser (also used for --help); ``prog`` names the command in messages."""
    common = _Parser(add_help=False)
    common.add_argument("--arch", choices=sorted(ARCHES), default=_default_arch(),
                        help="guest architecture (default: the host's, else x86_64)")
    common.add_argument("--kernel-src", type=Path, metavar="PATH",
                        help="kernel source tree to build (default: Debian's linux-source-7.3)")
    common.add_argument("--cache-dir", type=Path, metavar="DIR",
                        help=f"cache directory (default: ${CACHE_ENV} or "
                             "~/.cache/iommufd-harness)")
    boot_opts = _Parser(add_help=False)
    boot_opts.add_argument("--memory", default="2G", help="guest memory (default 2G)")
    boot_opts.add_argument("--smp", type=int, default=2, help="guest CPUs (default 2)")
    boot_opts.add_argument("--append", action="append", default=[], metavar="PARAM",
                           help="extra kernel command line parameter (repeatable)")
    timed = _Parser(add_help=False)
    timed.add_argument("--timeout", type=float, default=900, metavar="SECONDS",
                       help="kill the guest after this long (default 900; exit status 124)")

    parser = _Parser(prog=prog, description="Build and boot iommufd test guests.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("build", parents=[common], help="build or reuse the guest image")
    sub.add_parser("boot", parents=[common, boot_opts, timed],
                   help="boot and run the kernel's C selftests (TAP on stdout)")
    sub.add_parser("shell", parents=[common, boot_opts],
                   help="interactive shell on the guest console (Ctrl-A x quits)")
    ex = sub.add_parser("exec", parents=[common, boot_opts, timed],
                        help="run a shell command in the guest, exit with its status")
    ex.add_argument("--put", action="append", default=[], type=Path, metavar="FILE",
                    help="copy FILE into the guest as /put/<name>, executable (repeatable; "
                         "e.g. a reproducer built by iommufd-harness)")
    ex.add_argument("guest_command", nargs=argparse.REMAINDER, metavar="-- COMMAND...",
                    help="the command (after --)")
    return parser


#: what a build costs, for the notice when boot/shell/exec must build first (measured on
#: 2 shared cores: kernel, selftests, userspace and initramfs from nothing)
BUILD_ESTIMATE = "a cold build takes about 4 to 10 minutes on 2 cores; a rebuild of only " \
                 "the initramfs under a minute"


def _progress(message: str) -> None:
    """One progress line on stderr, timestamped as kunit_tool's are: ``[HH:MM:SS] ...``."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class BuildNotice:
    """The progress printer of boot, shell and exec: the first time a build step really
    runs (not a cache hit), it first says that the image is being built, where the
    step's log is and about how long it takes, instead of starting a kernel build
    silently."""

    def __init__(self, command: str, arch: str) -> None:
        self.command = command
        self.arch = arch
        self.building = False

    def __call__(self, message: str) -> None:
        if not self.building and "(log: " in message:
            self.building = True
            log = message.rsplit("(log: ", 1)[1].rstrip(")")
            _progress(f"[{self.command}] no cached {self.arch} guest image: building it "
                      f"first ({BUILD_ESTIMATE}); log: {log}")
        _progress(message)


def main(argv: Sequence[str] | None = None, prog: str = "python3 -m vm_images.cli") -> int:
    """Run one command; returns the process exit status (2 for bad input)."""
    parser = build_parser(prog)
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except UsageError as e:
        return _usage_error(str(e))
    except SystemExit as e:  # --help printed the usage
        return int(e.code or 0)
    command: list[str] = []
    if args.command == "exec":
        command = list(args.guest_command)
        if command[:1] == ["--"]:
            command = command[1:]
        if not command:
            return _usage_error("exec: no command given (exec [options] -- COMMAND...)")
    if args.kernel_src is not None and not args.kernel_src.is_dir():
        return _usage_error(f"--kernel-src {args.kernel_src}: not a directory")
    if args.cache_dir is not None:
        os.environ[CACHE_ENV] = str(args.cache_dir.resolve())

    start = time.monotonic()
    printer = _progress if args.command == "build" else BuildNotice(args.command, args.arch)
    try:
        image = ensure_guest_image(args.arch, kernel_src=args.kernel_src, progress=printer)
    except ValueError as e:
        return _usage_error(str(e))
    except StepError as e:
        print(f"vm_images: build failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("vm_images: interrupted", file=sys.stderr)
        return 130
    built = time.monotonic() - start

    try:
        if args.command == "build":
            return _report_build(image, built)
        if args.command == "boot":
            return _boot(image, args, ["iommufd.mode=selftests"])
        if args.command == "shell":
            return _shell(image, args)
        return _exec(image, args, command)
    except KeyboardInterrupt:
        print("\nvm_images: interrupted; QEMU stopped", file=sys.stderr)
        return 130
    except (OSError, ValueError) as e:  # qemu missing, IOMMUFD_QEMU_ACCEL wrong...
        print(f"vm_images: {e}", file=sys.stderr)
        return 1


def _usage_error(message: str) -> int:
    print(f"vm_images: {message}", file=sys.stderr)
    return 2


def _report_build(image: GuestImage, seconds: float) -> int:
    _progress(f"Elapsed time: {seconds:.1f}s total")
    print(f"arch:       {image.arch.name}")
    print(f"kernel:     {image.kernel} (Linux {image.kernel_release})")
    print(f"initramfs:  {image.initramfs}")
    print(f"config:     {image.kernel_config}")
    print(f"logs:       {image.log_dir}")
    print(f"key:        {image.key}")
    print(f"build time: {seconds:.2f} s")
    return 0


def _argv(image: GuestImage, args: argparse.Namespace, append: list[str]) -> list[str]:
    return image.arch.qemu_argv(image.kernel, image.initramfs, append=[*append, *args.append],
                                memory=args.memory, smp=args.smp)


def _boot(image: GuestImage, args: argparse.Namespace, append: list[str]) -> int:
    lines: list[str] = []
    started = time.monotonic()
    first_tap: list[float] = []

    def on_line(line: str) -> None:
        lines.append(line)
        if not first_tap and line.startswith("TAP version"):
            first_tap.append(time.monotonic() - started)

    status = qemu_run.capture(_argv(image, args, append), on_line, timeout=args.timeout)
    took = time.monotonic() - started
    summary = [f"qemu exit status {status} after {took:.1f} s"]
    if first_tap:
        summary.append(f"first TAP line after {first_tap[0]:.1f} s")
    for totals in console.parse_totals(lines):
        summary.append(str(totals))
    _progress("[boot] " + "; ".join(summary))
    finished = console.program_statuses(lines)
    # /init's selftests mode runs the iommu programs (the VFIO ones need a device).
    if status == 0 and set(finished) != set(IOMMU_PROGRAMS):
        # A panic resets the guest and -no-reboot makes that a clean QEMU exit: do not
        # let a crashed run pass for a finished one.
        _progress(f"[boot] the guest stopped before every selftest finished "
                  f"(finished: {', '.join(finished) or 'none'}); see the console above")
        return 1
    return status


def _shell(image: GuestImage, args: argparse.Namespace) -> int:
    _progress(f"[shell] {image.arch.name} guest; leave with 'poweroff -f' or Ctrl-A x")
    return qemu_run.interactive(_argv(image, args, ["iommufd.mode=shell"]))


def _with_files(image: GuestImage, files: Sequence[Path], workdir: Path) -> GuestImage:
    """The image with ``files`` added under /put: a second cpio archive appended to the
    initramfs (the kernel unpacks concatenated archives one after the other)."""
    initrd = workdir / "initramfs-put.cpio"
    with initrd.open("wb") as out:
        first = image.initramfs.read_bytes()
        # A following archive must start 4-byte aligned; zeros between them are skipped.
        out.write(first + bytes(-len(first) % 512))
        entries = [cpio.directory("put")]
        entries += [cpio.file(f"put/{f.name}", f.read_bytes(), 0o755) for f in files]
        cpio.write_cpio(out, entries)
    return dataclasses.replace(image, initramfs=initrd)


def _exec(image: GuestImage, args: argparse.Namespace, command: list[str]) -> int:
    missing = [str(f) for f in args.put if not f.is_file()]
    if missing:
        return _usage_error(f"exec --put: no such file: {', '.join(missing)}")
    if args.put:
        with tempfile.TemporaryDirectory(prefix="iommufd-put-") as workdir:
            return _exec_in(_with_files(image, args.put, Path(workdir)), args, command)
    return _exec_in(image, args, command)


def _exec_in(image: GuestImage, args: argparse.Namespace, command: list[str]) -> int:
    text = command[0] if len(command) == 1 else shlex.join(command)
    encoded = base64.b64encode(text.encode()).decode()
    if len(encoded) > MAX_EXEC_BYTES:
        return _usage_error(f"exec: command too long for the kernel command line "
                            f"({len(encoded)} > {MAX_EXEC_BYTES} base64 bytes)")
    lines: list[str] = []
    status = qemu_run.capture(_argv(image, args, ["iommufd.mode=exec",
                                                  f"iommufd.exec={encoded}"]),
                              lines.append, timeout=args.timeout)
    if status != 0:
        _progress(f"[exec] qemu exit status {status}")
        return status
    result = console.exec_status(lines)
    if result is None:
        _progress("[exec] the guest never reported the command's status")
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
