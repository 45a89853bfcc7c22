"""The C reproducer: a kselftest-style program against the kernel's uapi headers only.

One TAP line per call: ``ok N call`` when the kernel gives the expected result (at the
divergence: the second side's), ``not ok N call: got ..., expected ...`` otherwise;
exit status 1 (KSFT_FAIL) when any call is not as expected.
"""

from __future__ import annotations

import os
from pathlib import Path

import uapi_headers as u
from backends.compare.fields import REQUEST_NAMES, TEST_OP_NAMES, leaves
from backends.compare.log import Record
from harness.reproducer.program import Program, Step, fill_pattern

# The helpers every program shares: checks, TAP lines, memory and fail-nth set-up.
_PRELUDE = (Path(__file__).parent / "prelude.c").read_text()


def _c_bytes(data: bytes) -> str:
    items = [f"0x{b:02x}" for b in data]
    lines = [", ".join(items[i:i + 12]) for i in range(0, len(items), 12)]
    return "{\n\t\t" + ",\n\t\t".join(lines) + "\n\t}" if lines else "{ 0 }"


class _Writer:
    def __init__(self, program: Program) -> None:
        self.program = program
        self.lines: list[str] = []

    def expr(self, record: Record, name: str, raw: int) -> str:
        """A handle as an integer (struct fields, fds)."""
        ref = record.refs.get(name)
        if ref is None:
            return hex(raw) if raw > 9 else str(raw)
        var = self.program.var(ref)
        if var.startswith("mem"):
            return f"(uintptr_t)({self.pointer(record, name, raw)})"
        return var

    def pointer(self, record: Record, name: str, raw: int) -> str:
        """An address as a ``char *`` expression."""
        ref = record.refs.get(name)
        if ref is None:
            return f"(char *){raw:#x}"
        var = self.program.var(ref)
        return f"{var} + {ref.offset:#x}" if ref.offset else var

    def emit(self, text: str = "") -> None:
        self.lines.append(f"\t{text}" if text else "")

    def step(self, step: Step) -> None:
        r = step.record
        err = step.expect.errno
        if step.other is not None:
            sides = self.program.sides
            self.emit(f"/* the divergence ({r.diverged}): {sides[0]} gave "
                      f"{step.other.describe()}, {sides[1]} {step.expect.describe()} */")
        handler = getattr(self, f"_{r.op}", None)
        if handler is None:
            self.emit(f"/* call {r.index}: {r.op} has no C form; skipped */")
            self.emit(f'report("{r.call}", 1, 0, 0, 0, 0);')
            return
        handler(step, err)

    # -- one writer per call kind ---------------------------------------------------
    def _alloc(self, step: Step, err: int) -> None:
        r = step.record
        length, align, shared, huge = r.args
        var = step.produces["return"]
        self.emit(f"char *{var} = alloc_mem({length:#x}, {align:#x}, {int(shared)}, "
                  f"{int(huge)});")
        self.emit(f'check("alloc", {var} ? 0 : -1, {err}, 0, 0);')

    def _poke(self, step: Step, err: int) -> None:
        r = step.record
        addr = self.pointer(r, "addr", r.args[0])
        data: bytes = r.args[1]
        pattern = fill_pattern(data)
        if pattern == bytes(range(256)):
            self.emit(f"for (size_t i = 0; i < {len(data):#x}; i++)")
            self.emit(f"\t({addr})[i] = i;\t/* 0, 1, ..., 255, 0, 1, ... */")
        elif pattern is not None and len(data) > 64:
            self.emit(f"fill({addr}, (const unsigned char []){_c_bytes(pattern)}, "
                      f"{len(pattern)}, {len(data):#x});")
        else:
            self.emit(f"memcpy({addr}, (const unsigned char []){_c_bytes(data)}, "
                      f"{len(data)});")
        self.emit('check("fill", 0, 0, 0, 0);')

    def _peek(self, step: Step, err: int) -> None:
        r = step.record
        if r.expected is not None:
            addr = self.pointer(r, "addr", r.args[0])
            self.emit(f"check_bytes(\"peek\", {addr}, (const unsigned char [])"
                      f"{_c_bytes(r.expected)}, {len(r.expected)});")
        self.emit('check("peek", 0, 0, 0, 0);')

    def _open(self, step: Step, err: int) -> None:
        path, flags = step.record.args
        var = step.produces["return"]
        flag_text = "O_RDWR" if flags == os.O_RDWR else hex(flags)
        self.emit(f'int {var} = open("{path}", {flag_text});')
        self.emit(f'check("open {path}", {var}, {err}, 0, 0);')

    def _close(self, step: Step, err: int) -> None:
        r = step.record
        self.emit(f'check("close", close({self.expr(r, "fd", r.args[0])}), {err}, 0, 0);')

    def _memfd(self, step: Step, err: int) -> None:
        name, length = step.record.args
        var = step.produces["return"]
        self.emit(f'int {var} = memfd_create("{name}", MFD_CLOEXEC);')
        if length is not None:
            self.emit(f"if ({var} >= 0 && ftruncate({var}, {length:#x}))")
            self.emit(f"\t{var} = -1;")
        self.emit(f'check("memfd", {var}, {err}, 0, 0);')

    def _ftruncate(self, step: Step, err: int) -> None:
        r = step.record
        fd = self.expr(r, "fd", r.args[0])
        self.emit(f'check("ftruncate", ftruncate({fd}, {r.args[1]:#x}), {err}, 0, 0);')

    def _mmap(self, step: Step, err: int) -> None:
        r = step.record
        fd, length, offset, prot, flags = r.args
        var = step.produces["return"]
        self.emit(f"char *{var} = mmap(NULL, {length:#x}, {prot:#x}, {flags:#x}, "
                  f"{self.expr(r, 'fd', fd)}, {offset:#x});")
        self.emit(f'check("mmap", {var} == MAP_FAILED ? -1 : 0, {err}, 0, 0);')

    def _munmap(self, step: Step, err: int) -> None:
        r = step.record
        addr = self.pointer(r, "addr", r.args[0])
        self.emit(f'check("munmap", munmap({addr}, {r.args[1]:#x}), {err}, 0, 0);')

    def _read(self, step: Step, err: int) -> None:
        r = step.record
        fd, length = r.args
        buf = f"buf{step.number}"
        self.emit(f"char {buf}[{max(1, length)}];")
        self.emit(f'check("read", read({self.expr(r, "fd", fd)}, {buf}, {length}), {err}, '
                  f"0, 0);")
        if r.expected is not None:
            self.emit(f'check_bytes("read", {buf}, (const unsigned char [])'
                      f"{_c_bytes(r.expected)}, {len(r.expected)});")

    def _write(self, step: Step, err: int) -> None:
        r = step.record
        fd, data = r.args
        self.emit(f'check("write", write({self.expr(r, "fd", fd)}, (const unsigned char [])'
                  f"{_c_bytes(data)}, {len(data)}), {err}, 0, 0);")

    def _fail_nth_write(self, step: Step, err: int) -> None:
        self.emit(f'check("fail-nth {step.record.args[0]}", '
                  f'fail_nth("{step.record.args[0]}"), 0, 0, 0);')

    def _fail_nth_read(self, step: Step, err: int) -> None:
        self.emit('check("fail-nth disarm", fail_nth("0"), 0, 0, 0);')

    def _ioctl(self, step: Step, err: int) -> None:
        r = step.record
        fd = self.expr(r, "fd", r.args[0])
        request = REQUEST_NAMES.get(r.args[1], hex(r.args[1]))
        value = step.expect.value if isinstance(step.expect.value, int) else 0
        check_ret = int(err == 0 and (value == 0 or r.diverged == "return"))
        tail = f"{err}, {check_ret}, {value})"
        if r.data is None:  # no argument, a value or a bare address
            arg = r.args[2] if len(r.args) > 2 else None
            arg_text = "NULL" if arg is None else (
                self.expr(r, "arg", arg) if not isinstance(arg, int) else str(arg))
            self.emit(f'check("{r.call}", ioctl({fd}, {request}, {arg_text}), {tail};')
            return
        var = f"arg{step.number}"
        struct = r.layout.struct if r.layout is not None else None
        data = r.data
        exact = struct is not None and len(data) == u.ffi.sizeof(struct)
        if exact:
            self.emit(f"{struct} {var} = {{")
            for name, text in self.fields(r):
                self.emit(f"\t.{name} = {text},")
            self.emit("};")
            address = f"&{var}, sizeof({var})"
        else:
            self.emit(f"/* {len(data)} bytes of {struct or 'the argument'} */")
            fill = data[-1] if data else 0
            head = data.rstrip(bytes([fill]))
            if len(data) - len(head) > 32:  # a long filled tail: memset, then the head
                self.emit(f"unsigned char {var}[{len(data)}];")
                self.emit(f"memset({var}, {fill:#04x}, sizeof({var}));")
                if head:
                    self.emit(f"memcpy({var}, (const unsigned char []){_c_bytes(head)}, "
                              f"{len(head)});")
            else:
                self.emit(f"unsigned char {var}[{max(1, len(data))}] = {_c_bytes(data)};")
            for f in r.layout.fields if r.layout is not None else ():
                if f.name in r.refs:
                    self.emit(f"put({var}, {f.offset}, {f.size}, "
                              f"{self.expr(r, f.name, 0)});")
            address = f"{var}, sizeof({var})"
        self.emit(f'check("{r.call}", guarded_ioctl({fd}, {request}, {address}), {tail};')
        for source, produced in step.produces.items():
            if source == "return":
                continue
            if exact:
                self.emit(f"__u32 {produced} = {var}.{source};")
            else:
                assert r.layout is not None
                offset = next(f.offset for f in r.layout.fields if f.name == source)
                self.emit(f"__u32 {produced}; memcpy(&{produced}, {var} + {offset}, 4);")
        if step.other is not None:
            for name, _, want in r.field_diffs:
                got = f"{var}.{name}" if exact else self.raw_field(r, var, name)
                self.emit(f'check_field("{name}", {got}, {want:#x});')

    @staticmethod
    def raw_field(r: Record, var: str, name: str) -> str:
        """A field of a byte-buffer argument, read with the prelude's ``get``."""
        assert r.layout is not None and r.layout.struct is not None
        place = {n: (o, w) for n, o, w in leaves(u.ffi.typeof(r.layout.struct))}
        offset, width = place[name]
        return f"get({var}, {offset}, {width})"

    def fields(self, r: Record) -> list[tuple[str, str]]:
        """Designated initializers: nonzero and handle fields of the argument."""
        assert r.layout is not None and r.layout.struct is not None
        data = r.data or b""
        handles = {f.name for f in r.layout.fields}
        member = r.layout.member
        size = u.ffi.sizeof(r.layout.struct)
        out = []
        for name, offset, width in leaves(u.ffi.typeof(r.layout.struct)):
            if member is not None and "." in name and name.split(".", 1)[0] != member:
                continue
            value = int.from_bytes(data[offset:offset + width], "little")
            if name in handles and name in r.refs:
                out.append((name, self.expr(r, name, value)))
            elif name == "size" and value == size:
                out.append((name, f"sizeof({r.layout.struct})"))
            elif name == "op" and r.layout.struct == "struct iommu_test_cmd":
                out.append((name, TEST_OP_NAMES.get(value, str(value))))
            elif value:
                out.append((name, hex(value) if value > 9 else str(value)))
        return out


def render(program: Program, build_hint: str) -> str:
    """The C program's text."""
    w = _Writer(program)
    for step in program.steps:
        w.step(step)
    includes = ["#define _GNU_SOURCE", "#include <errno.h>", "#include <fcntl.h>",
                "#include <stdint.h>", "#include <stdio.h>", "#include <string.h>",
                "#include <sys/ioctl.h>", "#include <sys/mman.h>", "#include <unistd.h>",
                "", "#include <linux/iommufd.h>"]
    if any(s.record.call.startswith("VFIO_") for s in program.steps):
        includes.append("#include <linux/vfio.h>")
    if program.uses_selftest:
        includes.append('#include "iommufd_test.h"\t/* drivers/iommu/iommufd/ */')
    comment = ["// SPDX-License-Identifier: GPL-2.0", "/*", f" * {program.title}", " *"]
    comment += [f" * {line}" if line else " *" for line in program.notes]
    comment += [" *", f" * Build: {build_hint}", " */"]
    body = [
        "int main(void)", "{",
        '\tprintf("TAP version 13\\n");',
        f'\tprintf("1..{len(program.steps)}\\n");',
        *w.lines,
        '\tprintf("# %d as expected, %d not\\n", step_no - failures, failures);',
        "\treturn failures ? 1 : 0;\t/* KSFT_FAIL : KSFT_PASS */",
        "}", "",
    ]
    return "\n".join([*comment, *includes, "", _PRELUDE, *body])
