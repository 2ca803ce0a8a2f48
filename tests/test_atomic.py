"""Atomic writes: the target is replaced only by a complete file; a failed write leaves it and no temp file."""
import json
import os

import numpy as np
import pytest

from liquid_train.atomic import atomic_path, atomic_write_json, atomic_write_text


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "sub" / "state.json"
    atomic_write_json(str(target), {"step": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(str(target)) as tmp:
            with open(tmp, "w") as f:
                f.write('{"step": 2')  # torn
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"step": 1}
    assert os.listdir(target.parent) == ["state.json"]


def test_temp_keeps_the_extension_for_format_sniffing_writers(tmp_path):
    target = str(tmp_path / "index.npy")
    with atomic_path(target) as tmp:
        assert tmp.endswith(".npy") and os.path.dirname(tmp) == str(tmp_path)
        np.save(tmp, np.arange(3))  # would append .npy to a name without it
    np.testing.assert_array_equal(np.load(target), np.arange(3))
    assert atomic_write_text(str(tmp_path / "latest"), "iter_0000002\n", fsync=True) == str(tmp_path / "latest")
    assert sorted(os.listdir(tmp_path)) == ["index.npy", "latest"]
