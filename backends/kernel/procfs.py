"""Values of ``/proc/<pid>/status`` (what the kernel's tests read with fscanf)."""

from __future__ import annotations

from backends.contract import BackendError


def status_path(pid: int = 0) -> str:
    """``/proc/self/status`` for pid 0, else ``/proc/<pid>/status``."""
    return "/proc/self/status" if pid == 0 else f"/proc/{pid}/status"


def status_value(field: str, pid: int = 0) -> int:
    """The number of ``field`` (``VmPin``, ``VmLck``: kB; ``Cap*``: a hex mask).

    A missing process is the OSError of its open (ENOENT); a field the file lacks,
    or one that is not a number, is a BackendError.
    """
    name = field.removesuffix(":")
    path = status_path(pid)
    with open(path) as f:
        for line in f:
            key, sep, rest = line.partition(":")
            if not sep or key != name:
                continue
            words = rest.split()
            try:
                return int(words[0], 16 if name.startswith("Cap") else 10)
            except (IndexError, ValueError):
                raise BackendError(f"{path}: {name} is not a number: {rest.strip()!r}") from None
    raise BackendError(f"{path} has no field {name!r}")
