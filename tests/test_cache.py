"""The last-level cache size that decides when the kernels stream their outputs."""

from __future__ import annotations

from bn3d import _kernels
from bn3d._cache import DEFAULT_CACHE_BYTES, configure_streaming, last_level_cache_bytes


def write_cache(root, index, level, kind, size):
    directory = root / f"index{index}"
    directory.mkdir()
    (directory / "level").write_text(f"{level}\n")
    (directory / "type").write_text(f"{kind}\n")
    (directory / "size").write_text(f"{size}\n")


def test_the_last_level_data_cache_is_read_from_sysfs(tmp_path):
    write_cache(tmp_path, 0, 1, "Data", "32K")
    write_cache(tmp_path, 1, 1, "Instruction", "32K")
    write_cache(tmp_path, 2, 2, "Unified", "1024K")
    write_cache(tmp_path, 3, 3, "Unified", "32768K")
    assert last_level_cache_bytes(tmp_path) == 32 * 2**20


def test_instruction_caches_and_unreadable_entries_are_ignored(tmp_path):
    write_cache(tmp_path, 0, 1, "Data", "48K")
    write_cache(tmp_path, 1, 2, "Instruction", "2M")
    write_cache(tmp_path, 2, 3, "Unified", "lots")
    assert last_level_cache_bytes(tmp_path) == 48 * 2**10


def test_no_cache_information_gives_none(tmp_path):
    assert last_level_cache_bytes(tmp_path / "missing") is None


def test_streaming_threshold_is_the_cache_size():
    threshold = _kernels.stream_threshold()
    try:
        _kernels.set_stream_threshold(1)
        configure_streaming()
        expected = last_level_cache_bytes()
        assert _kernels.stream_threshold() == (DEFAULT_CACHE_BYTES if expected is None
                                               else expected)
    finally:
        _kernels.set_stream_threshold(threshold)


def test_info_shows_when_and_how_wide_the_kernels_stream(capsys):
    from bn3d.cli import main

    assert main(["info"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines()
             if line.startswith("streaming")]
    assert len(lines) == 1
    if _kernels.streaming_supported():
        assert f"{_kernels.stream_threshold() / 2**20:g} MiB" in lines[0]
        assert f"{_kernels.store_width()}-byte stores" in lines[0]
    else:
        assert "off" in lines[0]
