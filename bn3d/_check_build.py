"""A clear error when bn3d is imported from a source tree whose kernels are not built.

After ``pip install .`` in a clone, a Python started in the clone's root imports the
clone's ``bn3d/`` (the current directory comes first on ``sys.path``), which has the
Cython source of the kernels but not the compiled module. scikit-learn's
``__check_build`` is the model.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def raise_if_not_built(error: ImportError) -> None:
    """Re-raise ``error`` (the failed import of ``bn3d._kernels``) as an ImportError
    saying what happened and what to run."""
    if not (PACKAGE / "_kernels.pyx").exists():
        raise error
    raise ImportError(
        f"bn3d's compiled kernels (bn3d._kernels) are not built in {PACKAGE}.\n"
        "This is bn3d's source tree: Python imports it, rather than an installed bn3d, "
        "when it runs in the directory that contains it. Either run Python from another "
        "directory to use the installed bn3d (pip install . installs it), or build the "
        "kernels in place for development:\n"
        "    pip install -e . --no-build-isolation   (or: python setup.py build_ext --inplace)"
    ) from None  # the original error blames a circular import: misleading
