"""The ``iommufd-harness`` command.

``iommufd-harness run [--backend SPEC] [--ktap FILE] [--kcidb FILE] [PATHS] [PYTEST ARGS...]``
    run the iommufd scenario suite on a backend (default mock), or the scenario files
    or directories given as PATHS (your own scenarios); the short flags become the
    plugin's ``--iommufd-backend``, ``--iommufd-ktap`` and ``--iommufd-kcidb``.
``iommufd-harness vm build|boot|shell [...]``
    build, boot, or get a shell on a QEMU test guest (see vm_images.cli).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from harness import suite


def _is_path(arg: str) -> bool:
    return not arg.startswith("-") and Path(arg.split("::", 1)[0]).exists()


def pytest_argv(args: argparse.Namespace, extra: list[str]) -> list[str]:
    """The pytest command line of ``iommufd-harness run``."""
    # The suite uses no property-based tests; hypothesis' plugin (a dev extra) would
    # only add its start-up and summary time to every run.
    argv = ["--iommufd", "-q", "-p", "no:hypothesispytest"]
    for spec in args.backend or []:
        argv += ["--iommufd-backend", spec]
    if args.ktap:
        argv += ["--iommufd-ktap", args.ktap]
    if args.kcidb:
        argv += ["--iommufd-kcidb", args.kcidb]
    if not any(_is_path(arg) for arg in extra):
        argv = [*suite.pytest_args(), *argv]
    return argv + extra


def _run(args: argparse.Namespace, extra: list[str]) -> int:
    import pytest

    try:
        argv = pytest_argv(args, extra)
    except suite.SuiteMissing as error:
        print(f"iommufd-harness: {error}", file=sys.stderr)
        return 2
    return int(pytest.main(argv))


def _vm(extra: list[str]) -> int:
    from vm_images import cli as vm_cli

    return vm_cli.main(extra, prog="iommufd-harness vm")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used for --help)."""
    parser = argparse.ArgumentParser(
        prog="iommufd-harness",
        description="Kernel-selftest-style tests of the Linux iommufd uAPI.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run", help="run the iommufd suite, or the scenario files given (extra args go to "
                    "pytest)")
    run.add_argument("--backend", action="append", metavar="SPEC",
                     help="mock (default), kernel, qemu:x86_64, qemu:aarch64; repeatable "
                          "(env IOMMUFD_BACKEND)")
    run.add_argument("--ktap", metavar="FILE", help="write a KTAP v1 report (env IOMMUFD_KTAP)")
    run.add_argument("--kcidb", metavar="FILE",
                     help="write the run as KCIDB JSON for KernelCI (env IOMMUFD_KCIDB)")
    commands.add_parser("vm", help="build|boot|shell a QEMU test guest", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["vm"]:
        return _vm(args_list[1:])
    parser = build_parser()
    args, extra = parser.parse_known_args(args_list)
    return _run(args, extra)


if __name__ == "__main__":
    sys.exit(main())
