"""Every docstring example of bn3d.convert runs and prints what it shows.

tests/test_docstrings.py covers bn3d's top-level modules only; these are a level down.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import bn3d.convert

MODULES = ["bn3d.convert"] + sorted(
    info.name for info in pkgutil.walk_packages(bn3d.convert.__path__, prefix="bn3d.convert.")
)


def test_the_formats_package_and_its_modules_are_all_collected():
    assert {"bn3d.convert.formats", "bn3d.convert.formats.torch_file",
            "bn3d.convert.formats.mindspore_ckpt",
            "bn3d.convert.formats.safetensors_file"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
