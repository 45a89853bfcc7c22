"""The ``iommufd-harness`` command.

``iommufd-harness run [--backend SPEC] [--ktap FILE] [--kcidb FILE] [PATHS] [PYTEST ARGS...]``
    run the iommufd scenario suite on a backend (default mock), or the scenario files
    or directories given as PATHS (your own scenarios); the short flags become the
    plugin's ``--iommufd-backend``, ``--iommufd-ktap`` and ``--iommufd-kcidb``.
``iommufd-harness run --backend A --compare B [--repro-dir DIR]``
    the suite on A and B in lockstep, failing each case at its first divergence.
``iommufd-harness explore --backend A --compare B --ops N --seed S [--repro-dir DIR]``
    random iommufd operations on A and B in lockstep; the first divergence is shrunk
    and written out as Python and C reproducers.
``iommufd-harness probe [--json] [--backend SPEC]``
    what this host (or a qemu guest) offers and which backends and groups can run.
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
    if args.compare:
        argv += ["--iommufd-compare", args.compare]
    if args.repro_dir:
        argv += ["--iommufd-repro-dir", args.repro_dir]
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


def _explore(args: argparse.Namespace) -> int:
    from backends import BackendError, open_backend

    spec = f"compare:{args.backend}+{args.compare}"
    try:
        pair = open_backend(spec)
    except BackendError as error:
        print(f"iommufd-harness explore: {error}", file=sys.stderr)
        return 2
    from backends.compare import CompareBackend
    from harness.explore import explore

    assert isinstance(pair, CompareBackend)
    with pair:
        result = explore(pair, args.ops, args.seed, steps=args.steps,
                         repro_dir=Path(args.repro_dir) if args.repro_dir else None)
    for reported in pair.reported:
        print(f"{pair.primary.spec} vs {pair.secondary.spec}: {reported.line()}")
    if result.failure is not None:
        print(result.failure)
    if result.error is not None:
        print(f"exploration stopped: {result.error}")
    for path in result.reproducers:
        print(f"reproducer: {path}")
    print(result.summary())
    return 1 if result.failure is not None or result.error is not None else 0


def _vm(extra: list[str]) -> int:
    from vm_images import cli as vm_cli

    return vm_cli.main(extra, prog="iommufd-harness vm")


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


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
    run.add_argument("--compare", metavar="SPEC",
                     help="run every case on --backend and SPEC in lockstep")
    run.add_argument("--repro-dir", metavar="DIR",
                     help="with --compare: write reproducers of failed cases into DIR")
    ex = commands.add_parser("explore", help="random operations on two backends in lockstep")
    ex.add_argument("--backend", default="mock", metavar="SPEC", help="the first backend")
    ex.add_argument("--compare", default="mock", metavar="SPEC", help="the second backend")
    ex.add_argument("--ops", type=_positive, default=1000, metavar="N",
                    help="operations to run (default 1000)")
    ex.add_argument("--seed", type=int, default=0, metavar="S", help="random seed")
    ex.add_argument("--steps", type=_positive, default=40, metavar="K",
                    help="operations per sequence (default 40)")
    ex.add_argument("--repro-dir", metavar="DIR",
                    help="write the shrunk divergence's reproducers into DIR")
    probe = commands.add_parser("probe", help="what this host or a guest offers the tests")
    probe.add_argument("--json", action="store_true", help="print JSON")
    probe.add_argument("--backend", metavar="SPEC", help="kernel (default) or qemu:ARCH")
    commands.add_parser("vm", help="build|boot|shell a QEMU test guest", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["vm"]:
        return _vm(args_list[1:])
    parser = build_parser()
    args, extra = parser.parse_known_args(args_list)
    if args.command == "explore":
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return _explore(args)
    if args.command == "probe":
        if extra:
            parser.error(f"probe: unrecognized arguments: {' '.join(extra)}")
        from harness import probe as probe_cmd
        return probe_cmd.main(args.backend, args.json)
    return _run(args, extra)


if __name__ == "__main__":
    sys.exit(main())
