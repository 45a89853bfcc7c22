"""The Python reproducer: a script that replays a program's steps on any backend."""

from __future__ import annotations

from typing import Any

import uapi_headers as u
from backends.compare.fields import leaves
from backends.compare.log import Record
from harness.reproducer.program import Program, Step, fill_pattern


def _expr(program: Program, record: Record, name: str, raw: int) -> str:
    ref = record.refs.get(name)
    if ref is None:
        return hex(raw) if raw > 9 else str(raw)
    var = program.var(ref)
    return f"{var} + {ref.offset:#x}" if ref.offset else var


def _fields(program: Program, record: Record) -> dict[str, str]:
    """Dotted field -> Python expression, for the nonzero or handle fields."""
    assert record.layout is not None and record.layout.struct is not None
    data = record.data or b""
    member = record.layout.member
    kinds = {f.name for f in record.layout.fields}
    out: dict[str, str] = {}
    for name, offset, size in leaves(u.ffi.typeof(record.layout.struct)):
        if member is not None and "." in name and name.split(".", 1)[0] != member:
            continue
        if offset + size > len(data):
            continue
        value = int.from_bytes(data[offset:offset + size], "little")
        if value or name in record.refs:
            out[name] = _expr(program, record, name, value) if name in kinds else (
                hex(value) if value > 9 else str(value))
    return out


def _nested(fields: dict[str, str]) -> str:
    tree: dict[str, Any] = {}
    for name, expr in fields.items():
        node = tree
        parts = name.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = expr

    def render(node: dict[str, Any]) -> str:
        items = [f'"{k}": {render(v) if isinstance(v, dict) else v}' for k, v in node.items()]
        return "{" + ", ".join(items) + "}"
    return render(tree)


def _data(data: bytes) -> str:
    pattern = fill_pattern(data)
    if pattern is not None and len(data) > 64:
        return f"bytes.fromhex({pattern.hex()!r}) * {len(data) // len(pattern)}" + (
            f" + bytes.fromhex({pattern[:len(data) % len(pattern)].hex()!r})"
            if len(data) % len(pattern) else "")
    return f"bytes.fromhex({data.hex()!r})"


def _step(program: Program, step: Step) -> list[str]:
    r = step.record
    err = step.expect.errno
    name = r.call.replace('"', "'")
    out = f"{step.produces['return']} = " if "return" in step.produces else ""
    lines: list[str] = []
    if step.other is not None:
        lines.append(f"# the divergence ({r.diverged}): {program.sides[0]} gave "
                     f"{step.other.describe()}, {program.sides[1]} {step.expect.describe()}")
    # Return values are checked where they are plain (0) or were the divergence: an fd
    # that a call returns is numbered differently on every backend.
    value = step.expect.value if r.op == "ioctl" and isinstance(step.expect.value, int) and (
        step.expect.value == 0 or r.diverged == "return") else None
    if r.op == "ioctl":
        fd, request = r.args[0], r.args[1]
        fd_expr = _expr(program, r, "fd", fd)
        req = _request_name(request)
        if r.data is None:  # no argument, a value or a bare address
            arg = _expr(program, r, "arg", r.args[2]) if len(r.args) > 2 and isinstance(
                r.args[2], int) else "None"
            lines.append(f'{out}r.step("{name}", {err}, r.ioctl, {fd_expr}, {req}, {arg}, '
                         f"expect_value={value!r})")
            return lines
        var = f"arg{step.number}"
        struct = r.layout.struct if r.layout is not None else None
        if struct is not None and len(r.data) == u.ffi.sizeof(struct):
            lines.append(f'{var} = u.ffi.new("{struct} *", '
                         f"{_nested(_fields(program, r))})")
        else:
            lines.append(f"{var} = r.raw({_data(r.data)})  # {len(r.data)} "
                         f"bytes of {struct or 'the argument'}")
            for f in r.layout.fields if r.layout is not None else ():
                if f.name in r.refs:
                    lines.append(f"r.put({var}, {f.offset}, {f.size}, "
                                 f"{_expr(program, r, f.name, 0)})")
        lines.append(f'r.step("{name}", {err}, r.ioctl, {fd_expr}, {req}, {var}, '
                     f"expect_value={value!r})")
        for source, produced in step.produces.items():
            if source != "return":
                lines.append(f"{produced} = {var}.{source}")
        if step.other is not None and r.field_diffs:
            wanted = {n: s for n, _, s in r.field_diffs}
            view = var if struct is not None and len(r.data) == u.ffi.sizeof(struct) \
                else f'u.ffi.cast("{struct} *", {var})'
            lines.append(f"r.check_fields({view}, {wanted!r})")
        return lines
    call = _call(program, r)
    check_value = step.other is not None and r.op in ("peek", "read")
    lines.append(f'{"got = " if check_value else out}r.step("{name}", {err}, {call})')
    if check_value and step.record.expected is not None:
        lines.append(f'r.check_bytes("{name}", got or b"", {_data(step.record.expected)})')
    return lines


def _call(program: Program, r: Record) -> str:
    a = r.args
    be = "r.backend"
    if r.op == "alloc":
        return f"r.alloc, {a[0]:#x}, {a[1]:#x}, {a[2]}, {a[3]}"
    if r.op == "poke":
        return f"{be}.poke, {_expr(program, r, 'addr', a[0])}, {_data(a[1])}"
    if r.op in ("peek", "munmap"):
        return f"{be}.{r.op}, {_expr(program, r, 'addr', a[0])}, {a[1]:#x}"
    if r.op == "open":
        return f"{be}.open, {a[0]!r}, {a[1]}"
    if r.op == "memfd":
        if a[1] is None:
            return f"{be}.memfd_create, {a[0]!r}"
        return f"{be}.memfd, {a[1]:#x}, {a[0]!r}"
    if r.op in ("close", "ftruncate", "read", "write"):
        rest = "".join(f", {x!r}" for x in a[1:])
        return f"{be}.{r.op}, {_expr(program, r, 'fd', a[0])}{rest}"
    if r.op == "mmap":
        rest = "".join(f", {x}" for x in a[1:])
        return f"{be}.mmap, {_expr(program, r, 'fd', a[0])}{rest}"
    if r.op == "fail_nth_write":
        return f"{be}.fail_nth_write, {a[0]}"
    if r.op == "fail_nth_read":
        return f"{be}.fail_nth_read"
    return f"getattr({be}, {r.op!r}){''.join(f', {x!r}' for x in a)}"


def _request_name(request: int) -> str:
    for name, value in u.IOCTLS.items():
        if value == request:
            return f"u.{name}"
    return hex(request)


def render(program: Program) -> str:
    """The script's text."""
    head = [
        "#!/usr/bin/env python3",
        f'"""{program.title}',
        "",
        *program.notes,
        "",
        "Replays the calls on any backend of iommufd-harness:",
        "    PYTHONPATH=<checkout> python3 THIS_FILE [SPEC]   (default mock; kernel,",
        "    qemu:x86_64, compare:qemu:x86_64+mock, ...)",
        "Each call is checked against what the lockstep run saw (at the divergence: the",
        f"second side, {program.sides[1]}); the exit status is 1 if any call differs.",
        '"""',
        "import sys",
        "",
        "import uapi_headers as u",
        "from backends import open_backend",
        "from harness.reproducer.replay import Replay",
        "",
        "",
        "def main(spec: str) -> int:",
        "    with open_backend(spec) as backend:",
        f"        r = Replay(backend, {len(program.steps)})",
    ]
    body = [f"        {line}" for step in program.steps for line in _step(program, step)]
    tail = [
        "        return r.done()",
        "",
        "",
        'if __name__ == "__main__":',
        '    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "mock"))',
        "",
    ]
    return "\n".join(head + body + tail)
