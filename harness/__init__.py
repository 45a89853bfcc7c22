"""iommufd-harness: a kernel-selftest-style test framework for the Linux iommufd uAPI."""
