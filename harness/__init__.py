"""iommufd-harness: a kernel-selftest-style test framework for the Linux iommufd uAPI.

PYTEST_DONT_REWRITE: ``iommufd-harness run`` has imported this package before pytest
starts, so pytest could not rewrite it anyway; the marker spares an installed wheel
pytest's "already imported" warning on every run (the package holds no assertions).
"""
