# cffi's setuptools hook needs setup(); all other metadata lives in pyproject.toml.
from setuptools import setup

setup(cffi_modules=["cffi_uffd/_build.py:ffibuilder"])
