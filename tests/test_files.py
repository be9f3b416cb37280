"""Files replaced whole: the old content or the new, never half, and nothing left beside."""

import os

import numpy as np
import pytest

from vo_ml.files import replacing, replacing_folder


def test_a_finished_write_replaces_the_file_and_leaves_nothing_beside(tmp_path):
    target = tmp_path / "weights.npy"
    target.write_bytes(b"old")
    with replacing(target) as new:
        assert new.path.parent == tmp_path and new.path != target and new.path.suffix == ".npy"
        np.save(new.path, np.arange(3))  # np.save adds .npy to a name without it
    assert list(np.load(target)) == [0, 1, 2]
    assert os.listdir(tmp_path) == ["weights.npy"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary_one(tmp_path):
    target = tmp_path / "state.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), replacing(target) as new:
        new.path.write_text("half of the new")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["state.json"]


def test_a_discarded_write_leaves_the_target_as_it_was(tmp_path):
    target = tmp_path / "result.xml"
    with replacing(target) as new:
        new.path.write_text("not wanted any more")
        new.discard()
    assert os.listdir(tmp_path) == []


def test_the_new_file_gets_the_usual_permissions_not_owner_only(tmp_path):
    umask = os.umask(0o022)
    try:
        with replacing(tmp_path / "spectrum.fits") as new:
            new.path.write_bytes(b"SIMPLE")
    finally:
        os.umask(umask)
    assert (tmp_path / "spectrum.fits").stat().st_mode & 0o777 == 0o644


def test_a_folder_is_renamed_in_when_built_and_removed_when_building_fails(tmp_path):
    target = tmp_path / "store.zarr"
    with pytest.raises(OSError), replacing_folder(target) as scratch:
        (scratch / "zarr.json").write_text("{}")
        raise OSError("disk full")
    assert os.listdir(tmp_path) == []
    with replacing_folder(target) as scratch:
        (scratch / "zarr.json").write_text("{}")
    assert os.listdir(tmp_path) == ["store.zarr"] and (target / "zarr.json").is_file()
