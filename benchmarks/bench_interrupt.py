"""How fast Ctrl-C and SIGTERM end a guest run (target: within 2 s, no QEMU left).

Starts ``iommufd-harness run --backend qemu:ARCH -vv`` in its own process group, waits
for ten passed cases, sends the signal to the whole group (what a terminal's Ctrl-C
does) and prints the time until the run has exited, its exit status, and the QEMU
processes left. Run on an idle machine: ``python3 benchmarks/bench_interrupt.py``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time


def _qemus() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "qemu-system"], capture_output=True, text=True,
                         check=False).stdout
    return {int(pid) for pid in out.split()}


def interrupt(spec: str, signum: int, after: int = 10) -> tuple[float, int, int]:
    """``(seconds from the signal to the exit, exit status, QEMUs left)``."""
    before = _qemus()
    # -vv: the command's own -q and one -v cancel out; PASSED lines need one more.
    run = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "--backend", spec, "-vv"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    assert run.stdout is not None
    passed = 0
    for line in run.stdout:
        passed += "PASSED" in line
        if passed >= after:
            break
    sent = time.monotonic()
    os.killpg(run.pid, signum)
    run.communicate(timeout=120)
    took = time.monotonic() - sent
    return took, run.returncode, len(_qemus() - before)


def main() -> int:
    """Print the figures for SIGINT and SIGTERM."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--arch", default="x86_64", choices=("x86_64", "aarch64"))
    spec = f"qemu:{parser.parse_args().arch}"
    worst = 0
    for signum in (signal.SIGINT, signal.SIGTERM):
        took, status, left = interrupt(spec, signum)
        name = signal.Signals(signum).name
        print(f"{spec}: {name} mid-run: exited in {took:.2f} s (target <= 2 s), "
              f"status {status} (2 = interrupted), QEMU processes left: {left}")
        worst = max(worst, int(status != 2 or left > 0))
    return worst


if __name__ == "__main__":
    sys.exit(main())
