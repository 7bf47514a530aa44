"""bn3d.convert.formats imports with numpy alone; protobuf and safetensors load when used."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from bn3d.convert.formats import mindspore_ckpt, write_checkpoint


def test_importing_the_formats_loads_neither_protobuf_nor_safetensors(tmp_path):
    code = ("import sys, bn3d.convert.formats; "
            "print(sorted(m for m in ('google.protobuf', 'safetensors') if m in sys.modules))")
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(path for path in sys.path if path))
    # From an empty directory, so the installed bn3d is imported, not the source tree.
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=environment, check=True, cwd=tmp_path)
    assert result.stdout.strip() == "[]"


def test_torch_files_need_neither(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "google.protobuf", None)
    write_checkpoint(tmp_path / "a.pth", {"w": np.ones(2)}, "torch")


@pytest.mark.parametrize(("format", "module"), [
    ("mindspore", "google.protobuf.descriptor_pb2"),
    ("torch-safetensors", "safetensors"),
])
def test_a_missing_optional_package_names_the_extra_to_install(tmp_path, monkeypatch, format,
                                                               module):
    mindspore_ckpt._message_classes.cache_clear()
    monkeypatch.setitem(sys.modules, module, None)  # makes "import module" fail
    try:
        with pytest.raises(ImportError, match='pip install "bn3d\\[convert\\]"'):
            write_checkpoint(tmp_path / "a", {"w": np.ones(2)}, format)
    finally:
        mindspore_ckpt._message_classes.cache_clear()
    assert not (tmp_path / "a").exists()
