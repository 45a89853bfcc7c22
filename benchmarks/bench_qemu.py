"""The suite in a QEMU guest beside the kernel's C suite over the same cases, same guest.

For each architecture, one run of ``pytest tests/iommufd --backend qemu:ARCH`` (the
cases run by pytest inside the guest, on its ``kernel`` backend), then in that same
guest:

* the kernel's C ``iommufd`` binary over exactly the kernel-named cases the Python run
  executed (``-r fixture.variant.test`` for each), timed with the guest's clock;
* one ioctl's cost, a loop of IOAS_MAP + IOAS_UNMAP of one page: through the
  harness's backend, in bare Python (cffi + ctypes) and in C (benchmarks/guest/).

Prints the warm start to the first test result, both suites' times and their ratio
(target: at most 2x), and the three per-ioctl costs (target: the backend within 2x of
bare Python). Run: ``python3 benchmarks/bench_qemu.py [--arch x86_64|aarch64|all]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

START = time.monotonic()

import pytest  # noqa: E402  (START is taken first: the warm start counts imports)

ROOT = Path(__file__).resolve().parent.parent
GUEST_DIR = Path(__file__).resolve().parent / "guest"
LOOPS = 5000
FAIL_NTH = "basic_fail_nth."


def _uptime_span(output: str) -> float:
    """Seconds between the first and the last ``/proc/uptime`` line of ``output``."""
    stamps = [float(line.split()[1]) for line in output.splitlines()
              if line.startswith("UPTIME ")]
    return stamps[-1] - stamps[0]


def _static_c(arch: str) -> bytes:
    """benchmarks/guest/map_unmap.c built statically for ``arch`` against the guest
    kernel's own uAPI headers, with the toolchain that builds its C selftests."""
    from vm_images.arch import ARCHES
    from vm_images.image import ensure_guest_image

    image = ensure_guest_image(arch, progress=lambda _m: None)
    target = ARCHES[arch]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "map_unmap"
        subprocess.run([f"{target.cross_prefix}gcc", "-O2", "-static", "-isystem",
                        str(image.build_dir / "usr" / "include"),
                        str(GUEST_DIR / "map_unmap.c"), "-o", str(out)], check=True)
        return out.read_bytes()


class Bench:
    """A pytest plugin: times the run, then measures the C side in the same guest."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.first_result: float | None = None
        self.figures: dict[str, Any] = {}

    def pytest_runtest_logreport(self, report: Any) -> None:
        if self.first_result is None and report.when == "call":
            self.first_result = time.monotonic()

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        config = session.config
        from harness.state import STATE

        backend = config.stash[STATE].backends.get(self.spec)
        runner = config.pluginmanager.get_plugin("iommufd-guestrun")
        results = config.pluginmanager.get_plugin("iommufd-results")
        if backend is None or runner is None or not runner.stats or results is None:
            return
        names = sorted(results.outcomes())
        # Each kernel name to the C binary that holds it: basic_fail_nth.* are in
        # iommufd_fail_nth, the rest in iommufd; both run inside one timed span.
        runs = []
        for binary, group in (("iommufd_fail_nth", [n for n in names if n.startswith(FAIL_NTH)]),
                              ("iommufd", [n for n in names if not n.startswith(FAIL_NTH)])):
            if group:
                filters = " ".join(f"-r {name}" for name in group)
                runs.append(f"/selftests/{binary} {filters} >>/tmp/c.tap")
        _status, output, _ = backend.run(
            ["sh", "-c", "rm -f /tmp/c.tap; echo UPTIME $(cat /proc/uptime); "
             + "; ".join(runs) + "; echo UPTIME $(cat /proc/uptime); "
             "grep -c '^ok\\|^not ok' /tmp/c.tap"])
        text = output.decode()
        self.figures["c_cases"] = int(text.strip().splitlines()[-1])
        self.figures["c_seconds"] = _uptime_span(text)
        self.figures["python_cases"] = sum(s["cases"] for s in runner.stats)
        self.figures["python_cases_seconds"] = sum(s["cases_seconds"] for s in runner.stats)
        self.figures["python_session_seconds"] = sum(s["since_start"] for s in runner.stats)
        self.figures["names"] = len(names)
        backend.put("/tmp/map_unmap.py", (GUEST_DIR / "map_unmap.py").read_bytes(), 0o644)
        backend.put("/tmp/map_unmap", _static_c(self.spec.split(":")[1]))
        _, out, _ = backend.run(["python3", "/tmp/map_unmap.py", str(LOOPS)])
        self.figures["backend_us"], self.figures["bare_us"] = map(float, out.split())
        _, out, _ = backend.run(["/tmp/map_unmap", str(LOOPS)])
        self.figures["c_us"] = float(out)


def bench(arch: str) -> int:
    """One architecture: run, measure, print."""
    spec = f"qemu:{arch}"
    plugin = Bench(spec)
    started = time.monotonic() if arch != "x86_64" else START
    code = pytest.main([str(ROOT / "tests" / "iommufd"), "-q", "--iommufd-backend", spec,
                        "-p", "no:cacheprovider", "-p", "no:hypothesispytest"],
                       plugins=[plugin])
    f = plugin.figures
    if plugin.first_result is None or "c_us" not in f:
        print(f"bench_qemu: {spec}: incomplete run (pytest exit {code})", file=sys.stderr)
        return 1
    print(f"{spec}: warm start to the first test result: {plugin.first_result - started:.1f} s"
          " (target <= 5 s)")
    print(f"{spec}: same cases, same guest: python {f['python_cases']} cases, "
          f"C {f['c_cases']} cases ({f['names']} kernel names asked)")
    print(f"{spec}: python suite in the guest: {f['python_cases_seconds']:.2f} s of cases, "
          f"{f['python_session_seconds']:.2f} s with pytest's start and collection")
    print(f"{spec}: kernel C iommufd over the same cases: {f['c_seconds']:.2f} s")
    print(f"{spec}: ratio python / C: {f['python_cases_seconds'] / f['c_seconds']:.2f}x cases, "
          f"{f['python_session_seconds'] / f['c_seconds']:.2f}x with start-up (target <= 2x)")
    print(f"{spec}: one ioctl (IOAS_MAP/UNMAP loop of {LOOPS}): backend {f['backend_us']:.1f} us,"
          f" bare Python {f['bare_us']:.1f} us, C {f['c_us']:.1f} us; backend / bare "
          f"{f['backend_us'] / f['bare_us']:.2f}x (target <= 2x)")
    return 0 if code == 0 else int(code)


def main() -> int:
    """Run and print the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--arch", default="all", choices=("x86_64", "aarch64", "all"))
    args = parser.parse_args()
    arches = ("x86_64", "aarch64") if args.arch == "all" else (args.arch,)
    worst = 0
    for arch in arches:
        worst = max(worst, bench(arch))
    return worst


if __name__ == "__main__":
    sys.exit(main())
