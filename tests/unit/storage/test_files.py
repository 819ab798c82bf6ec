"""atomic_write: the one way a layer replaces a small state file."""

from __future__ import annotations

import pytest

from dari.storage import atomic_write


@pytest.mark.parametrize("fsync", [True, False])
def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path, fsync):
    path = tmp_path / "state.json"
    atomic_write(path, "old", fsync=fsync)
    atomic_write(path, b"new" * 1000, fsync=fsync)
    assert path.read_bytes() == b"new" * 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
