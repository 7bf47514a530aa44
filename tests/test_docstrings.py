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


# Modules of an optional extra, and the package they need.
NEEDS = {"bn3d.dask": "dask.array"}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_bn3d_dask_without_dask_names_the_extra_to_install(tmp_path):
    import subprocess
    import sys

    # In an empty directory: the installed bn3d, not the source tree.
    code = ("import sys; sys.modules['dask'] = None\n"
            "try:\n    import bn3d.dask\nexcept ImportError as error:\n    print(error)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=tmp_path)
    assert 'pip install "bn3d[dask]"' in result.stdout
