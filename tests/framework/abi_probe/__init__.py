"""Check uapi_headers against the real kernel headers by compiling a C probe.

The pieces, in the order the conformance test uses them:

- :mod:`abi_probe.fetch`: the real headers of the same level from Debian (linux-libc-dev 7.3.x
  for linux/iommufd.h and linux/vfio.h, linux-source-7.3 for iommufd_test.h and the kernel's
  ioctl dispatch table), through the project's private apt configuration.
- :mod:`abi_probe.probe`: a C program generated from what the Python side declares (every
  struct size, field offset, constant, ioctl number, enum), compiled against those headers
  (cached by a hash of its inputs) and run; its output parsed back into facts.
- :mod:`abi_probe.inventory`: the reverse direction, what the headers declare (structs,
  fields, enumerators, macros) read from the preprocessed headers with pycparser, so a
  declaration that Python lacks is found too.
- :mod:`abi_probe.compare`: the same facts from ``uapi_headers.ffi`` and the comparisons,
  which return mismatches (name, C value, Python value) rather than stopping at the first.
- :mod:`abi_probe.conformance`: the two checks end to end, as the test runs them.

No shim headers are needed: iommufd_test.h includes only <linux/iommufd.h> and
<linux/types.h>, which linux-libc-dev provides; it is copied next to the probe source.
"""
