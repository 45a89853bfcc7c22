"""Open files and the task's fd table (``struct file``, ``struct files_struct``)."""

from __future__ import annotations

from collections.abc import Callable
from errno import EACCES, EBADF, EINVAL, ENODEV, ENOMEM, ENOTTY, EOVERFLOW

from backends.mock.errors import kerr
from backends.mock.mm import PAGE_SHIFT, PAGE_SIZE, PROT_WRITE, MemFile, Mm

MAX_RW_COUNT = 0x7FFF_F000
"""The most one read(2) or write(2) moves: INT_MAX rounded down to a page."""


_PAGE_MASK = ~(PAGE_SIZE - 1)
_U64 = (1 << 64) - 1


def do_mmap_checks(file: File, length: int, offset: int) -> None:
    """What mmap(2) checks before the file's own mmap runs (sys_mmap, do_mmap,
    file_mmap_ok): a zero length is EINVAL, an offset that is not page aligned EINVAL,
    a length that wraps when page aligned ENOMEM, and an offset (as the unsigned long
    the syscall takes) whose pages overrun the file's largest size EOVERFLOW."""
    off = offset & _U64
    if off & ~_PAGE_MASK:
        raise kerr(EINVAL)
    if not length:
        raise kerr(EINVAL)
    length = (length + PAGE_SIZE - 1) & _PAGE_MASK
    if not length or length > _U64:
        raise kerr(ENOMEM)
    pgoff = off >> PAGE_SHIFT
    if pgoff + (length >> PAGE_SHIFT) > _U64:
        raise kerr(EOVERFLOW)
    if length > file.max_size or pgoff > (file.max_size - length) >> PAGE_SHIFT:
        raise kerr(EOVERFLOW)


class File:
    """A ``struct file``: reference counted, released on the last put."""

    name = "file"
    max_size = _U64
    """file_mmap_size_max(): ULONG_MAX for a character device such as /dev/iommu."""

    def __init__(self) -> None:
        self.f_count = 1
        self.released = False

    def get(self) -> None:
        """get_file()."""
        self.f_count += 1

    def put(self) -> None:
        """fput(): the last reference runs ``release``."""
        self.f_count -= 1
        if self.f_count == 0 and not self.released:
            self.released = True
            self.release()

    def release(self) -> None:
        """The file's ``release`` fop."""

    def ioctl(self, cmd: int, arg: int) -> int:
        """The ``unlocked_ioctl`` fop; ``arg`` is the raw unsigned long."""
        raise kerr(ENOTTY)

    def read(self, length: int) -> bytes:
        """The ``read`` fop."""
        raise kerr(EINVAL)

    def write(self, data: bytes) -> int:
        """The ``write`` fop."""
        raise kerr(EINVAL)

    def mmap(self, length: int, offset: int, prot: int, shared: bool) -> int:
        """The ``mmap`` fop; returns the user address."""
        raise kerr(ENODEV)


class FdTable:
    """The task's descriptors: lowest free number first, from 3 (0-2 are stdio)."""

    FIRST_FD = 3

    def __init__(self) -> None:
        self._files: dict[int, File | None] = {}

    def get_unused_fd(self) -> int:
        """get_unused_fd_flags(): reserve the lowest free number."""
        fd = self.FIRST_FD
        while fd in self._files:
            fd += 1
        self._files[fd] = None
        return fd

    def put_unused_fd(self, fd: int) -> None:
        """Give back a reserved number that was never installed."""
        if self._files.get(fd, 0) is None:
            del self._files[fd]

    def fd_install(self, fd: int, file: File) -> None:
        """Publish ``file`` (whose reference the table now owns) at a reserved number."""
        self._files[fd] = file

    def install(self, file: File) -> int:
        """get_unused_fd + fd_install."""
        fd = self.get_unused_fd()
        self.fd_install(fd, file)
        return fd

    def lookup(self, fd: int) -> File:
        """The file behind ``fd`` (no reference taken); EBADF if none."""
        file = self._files.get(fd)
        if file is None:
            raise kerr(EBADF)
        return file

    def fget(self, fd: int) -> File | None:
        """fget(): the file with a reference, or None."""
        file = self._files.get(fd)
        if file is None:
            return None
        file.get()
        return file

    def close(self, fd: int) -> None:
        """close(2): drop the table's reference."""
        file = self._files.get(fd)
        if file is None:
            raise kerr(EBADF)
        del self._files[fd]
        file.put()

    def dup(self) -> FdTable:
        """dup_fd() at fork: a new table with the same open files (one more reference
        each)."""
        table = FdTable()
        for fd, file in self._files.items():
            if file is not None:
                file.get()
                table._files[fd] = file
        return table

    def fds(self) -> list[int]:
        """Every open descriptor."""
        return sorted(fd for fd, f in self._files.items() if f is not None)


class MemfdFile(File):
    """A memfd_create() file: a shmem inode that can be read, written and mapped.

    ``writable`` False models a file opened O_RDONLY: a shared writable mapping of it
    is EACCES, a private one is fine (writes go to private copies).
    """

    name = "memfd"
    max_size = (1 << 63) - 1
    """MAX_LFS_FILESIZE: a memfd is a regular file."""

    def __init__(self, memfile: MemFile, current_mm: Callable[[], Mm], *,
                 writable: bool = True, shmem: bool = True) -> None:
        super().__init__()
        self.memfile = memfile
        self.current_mm = current_mm
        """The mm of the task calling mmap (an fd may be shared across a fork)."""
        self.pos = 0
        self.writable = writable
        self.shmem = shmem
        """False for a regular file: memfd_pin_folios() refuses it (EINVAL)."""

    def read(self, length: int) -> bytes:
        """read(2) at the file position: short at EOF, and at most MAX_RW_COUNT bytes
        (vfs_read caps every read there)."""
        size = self.memfile.size
        length = max(0, min(length, MAX_RW_COUNT, size - self.pos))
        pages = self.memfile.pages
        first, last = self.pos // PAGE_SIZE, (self.pos + length - 1) // PAGE_SIZE
        if not any(first <= index <= last for index in pages):
            # Nothing written there: zeros, which bytes() leaves to the allocator.
            self.pos += length
            return bytes(length)
        out: list[bytes] = []
        while length:
            index, offset = divmod(self.pos, PAGE_SIZE)
            chunk = min(length, PAGE_SIZE - offset)
            page = pages.get(index)
            out.append(bytes(chunk) if page is None else page.read(offset, chunk))
            self.pos += chunk
            length -= chunk
        return b"".join(out)

    def write(self, data: bytes) -> int:
        """write(2) at the file position, growing the file."""
        if not self.writable:
            raise kerr(EBADF)
        view = memoryview(data)
        done = 0
        while done < len(view):
            index, offset = divmod(self.pos, PAGE_SIZE)
            chunk = min(len(view) - done, PAGE_SIZE - offset)
            self.memfile.page(index).write(offset, view[done:done + chunk])
            self.pos += chunk
            done += chunk
        self.memfile.size = max(self.memfile.size, self.pos)
        return done

    def mmap(self, length: int, offset: int, prot: int, shared: bool) -> int:
        """shmem mmap: the page cache, or private copies on write with MAP_PRIVATE."""
        if offset % PAGE_SIZE:
            raise kerr(EINVAL)
        if shared and prot & PROT_WRITE and not self.writable:
            raise kerr(EACCES)
        return self.current_mm().mmap(length, prot=prot, shared=shared, obj=self.memfile,
                                      pgoff=offset // PAGE_SIZE)
