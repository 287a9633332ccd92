# cffi's setuptools hook needs setup(); all other metadata lives in pyproject.toml.
# One entry per cffi build script (each in a _cffi_src/ directory, apart from the runtime code).
from setuptools import setup

setup(cffi_modules=[
    "cffi_uffd/_cffi_src/build_uffd.py:ffibuilder",
    "migrator/_cffi_src/build_guest.py:ffibuilder",
    "migrator/_cffi_src/build_dataplane.py:ffibuilder",
    "migrator/_cffi_src/build_sqlite.py:ffibuilder",
])
