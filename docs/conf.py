"""Sphinx configuration of bn3d's documentation.

Build it with ``sphinx-build -W --keep-going -b html docs docs/_build/html`` after
``pip install ".[docs]"``; run its examples with ``sphinx-build -b doctest docs
docs/_build/doctest``. The documentation documents the installed bn3d.
"""

from __future__ import annotations

import sys
from pathlib import Path

import bn3d

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

from offline_inventories import fallback_inventory  # noqa: E402

project = "bn3d"
author = "the bn3d developers"
copyright = "the bn3d developers"
version = release = bn3d.__version__

extensions = [
    "sphinx.ext.autodoc",
    "numpydoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # serves MathJax from _static/mathjax: math renders offline
    "sphinx.ext.viewcode",
    "spec_tables",
    "benchmark_results",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []
root_doc = "index"
language = "en"

# -- HTML ------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"bn3d {release}"
html_static_path = ["_static"]
html_css_files = ["bn3d.css"]
html_theme_options = {
    "source_repository": None,
    "navigation_with_keys": True,
}
html_show_sourcelink = False

# -- autodoc and numpydoc -------------------------------------------
autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
}
autodoc_typehints = "none"  # the docstrings' Parameters sections carry the types
autodoc_class_signature = "mixed"
autoclass_content = "class"
numpydoc_show_class_members = False  # autodoc's :members: lists them
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()

# -- intersphinx: the real inventories online, a small fallback offline -----------------------
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", (None, fallback_inventory("python"))),
    "numpy": ("https://numpy.org/doc/stable", (None, fallback_inventory("numpy"))),
}
intersphinx_timeout = 5

# -- doctest ---------------------------------------------------------------------------------
doctest_global_setup = """
import numpy as np
import bn3d
"""
doctest_global_cleanup = """
bn3d.set_num_threads(None)
"""
import doctest as _doctest  # noqa: E402

doctest_default_flags = (_doctest.ELLIPSIS | _doctest.NORMALIZE_WHITESPACE
                         | _doctest.IGNORE_EXCEPTION_DETAIL | _doctest.DONT_ACCEPT_TRUE_FOR_1)

# -- bn3d's extensions -------------------------------------------------------------------------
bn3d_benchmark_results = "../benchmarks/results.json"
