"""Every docstring example of the installed package runs and prints what it shows."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import bn3d

MODULES = sorted(
    info.name for info in pkgutil.iter_modules(bn3d.__path__, prefix="bn3d.")
    if info.name not in ("bn3d.__main__", "bn3d._kernels")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
