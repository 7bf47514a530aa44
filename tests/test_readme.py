"""The README's Python examples run, in order, as a user would paste them, and it gives the
same commands as the documentation."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks
    namespace: dict = {}
    for block in blocks:
        if "bn3d.dask" in block and importlib.util.find_spec("dask") is None:
            continue  # the dask extra's example, where it is not installed
        exec(compile(block, str(README), "exec"), namespace)


def test_readme_starts_with_the_two_set_up_commands():
    first_block = re.search(r"```bash\n(.*?)```", README.read_text(), flags=re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()]
    assert commands == ['pip install . && bn3d example', 'pip install ".[test]" && pytest']


def test_the_documentation_build_command_is_the_same_everywhere():
    command = "sphinx-build -W --keep-going -b html docs docs/_build/html"
    for path in (README, ROOT / "docs" / "index.rst", ROOT / "docs" / "conf.py",
                 ROOT / "docs" / "install.rst", ROOT / "docs" / "performance.rst"):
        assert command in path.read_text(encoding="utf-8"), path
