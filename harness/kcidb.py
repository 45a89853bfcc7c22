"""The run as KCIDB JSON (schema v5), the format KernelCI collects test results in.

One checkout per kernel the run tested (the backend's kernel release), one build per
backend (its architecture, and what the backend is), one test per ported case with its
kernel path ``iommufd.<fixture>.<variant>.<test>``, status, duration and the backend as
the environment. IDs are ``iommufd_harness:<run>:...``; ``<run>`` is unique per run.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.results import BackendInfo, CaseRecord

ORIGIN = "iommufd_harness"
#: the KCIDB schema version written (kcidb-io validates it)
VERSION = {"major": 5, "minor": 3}
#: the kselftest collection the ported cases belong to, first element of each path
SUITE = "iommufd"
#: KCIDB statuses describe the tested kernel: a known issue (xfail) is a failing kernel
STATUS = {"pass": "PASS", "xpass": "PASS", "fail": "FAIL", "xfail": "FAIL",
          "error": "ERROR", "skip": "SKIP"}
LOG_EXCERPT_MAX = 16384


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def _kernel_name(info: BackendInfo) -> str:
    if info.kernel_release == "mock":
        return "mock (in-Python model of the Linux 7.3.4 iommufd uAPI)"
    return f"Linux {info.kernel_release}"


def build(records: Iterable[CaseRecord], backends: list[BackendInfo], started: float,
          run_id: str | None = None) -> dict[str, Any]:
    """The KCIDB document of a run: ported cases only, grouped by backend."""
    run = run_id or uuid.uuid4().hex[:16]
    prefix = f"{ORIGIN}:{run}"
    checkouts: dict[str, dict[str, Any]] = {}
    builds: dict[str, dict[str, Any]] = {}
    for info in backends:
        checkout_id = f"{prefix}:kernel:{info.kernel_release}"
        checkouts.setdefault(checkout_id, {
            "id": checkout_id, "origin": ORIGIN, "tree_name": "linux",
            "start_time": _iso(started), "comment": _kernel_name(info),
            "misc": {"kernel_release": info.kernel_release},
        })
        entry: dict[str, Any] = {
            "id": f"{prefix}:build:{info.spec}", "origin": ORIGIN, "checkout_id": checkout_id,
            "start_time": _iso(started), "comment": info.description,
            "misc": {"backend": info.spec},
        }
        if info.architecture:
            entry["architecture"] = info.architecture
        builds[info.spec] = entry
    tests = []
    for number, record in enumerate(records, start=1):
        if record.kernel_name is None or record.backend not in builds:
            continue
        case = record.kernel_name.split("@", 1)[0]
        test: dict[str, Any] = {
            "id": f"{prefix}:test:{number}", "origin": ORIGIN,
            "build_id": builds[record.backend]["id"],
            "path": f"{SUITE}.{case}",
            "status": STATUS[record.result.outcome],
            "duration": round(record.duration, 6),
            "environment": {"comment": f"iommufd-harness backend {record.backend}",
                            "misc": {"backend": record.backend}},
            "misc": {"pytest_nodeid": record.nodeid, "ktap_outcome": record.result.outcome},
        }
        if record.start is not None:
            test["start_time"] = _iso(record.start)
        excerpt = "\n".join([*record.result.diagnostics, record.result.reason]).strip()
        if excerpt:
            test["log_excerpt"] = excerpt[-LOG_EXCERPT_MAX:]
        tests.append(test)
    return {"version": dict(VERSION), "checkouts": list(checkouts.values()),
            "builds": list(builds.values()), "tests": tests}


def write(path: Path, document: dict[str, Any]) -> None:
    """Write the document as JSON (the parent directory must exist)."""
    path.write_text(json.dumps(document, indent=1) + "\n")
