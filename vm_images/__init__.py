"""Everything a QEMU test guest needs: kernel, selftests, userspace, initramfs, machines.

Entry points: ``vm_images.image.ensure_guest_image(arch)`` (build or reuse a bootable
image), ``vm_images.arch.ARCHES[arch].qemu_argv(...)`` (the QEMU command line), and
``python3 -m vm_images.cli build|boot|shell|exec``.

One job per module:

=============== ==============================================================
arch            per-architecture settings and the QEMU command line
configs/        the kernel config fragment of each architecture
kconfig         parse fragments and .config files; check every option landed
kernel_source   where the kernel tree comes from (Debian package or --kernel-src)
kernel          the kernel build (tinyconfig + fragment, verified, make)
selftests       the kernel's iommufd C selftests, static, from the same tree
debian          Debian packages through a private apt configuration
userspace       the guest's python3.11, cffi and busybox, unpacked and checked
elf             ELF headers: static programs, shared-library closure
runtime         this project's packages as the guest gets them
guest/init      the guest's PID 1 (modes: agent, shell, selftests, exec)
cpio            the initramfs archive format
initramfs       assemble userspace + runtime + selftests + /init
image           ensure_guest_image: all of the above, each step cached
cache           cache directory, input-hash keys, build-once entries
steps           build steps: progress lines, logs, errors naming step and log
console         reading the guest console (TAP totals, /init's status lines)
qemu_run        run QEMU in the foreground without leaving it behind
cli             the command line
=============== ==============================================================
"""
