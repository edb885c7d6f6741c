"""Atomic writes: a failed write leaves the destination as it was and no temporary file behind."""

from __future__ import annotations

import json
import math

import pytest

from unet_seg.io.atomic import copy_atomic, replace_atomic, write_json_atomic, write_text_atomic


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path) -> None:
    target = write_text_atomic(tmp_path / "out.txt", "old")

    def half_then_fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        replace_atomic(half_then_fail, target)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_temporary_name_keeps_the_format_suffix(tmp_path) -> None:
    seen = []
    replace_atomic(
        lambda tmp: (seen.append(tmp.name), tmp.write_bytes(b"x")), tmp_path / "a.nii.gz"
    )
    assert seen[0].endswith("-a.nii.gz") and seen[0] != "a.nii.gz"
    assert (tmp_path / "a.nii.gz").read_bytes() == b"x"


def test_copy_and_json(tmp_path) -> None:
    src = write_text_atomic(tmp_path / "src.ckpt", "weights")
    assert copy_atomic(src, tmp_path / "sub" / "model.ckpt").read_text() == "weights"
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt"):
        copy_atomic(tmp_path / "missing.ckpt", tmp_path / "x.ckpt")
    path = write_json_atomic(tmp_path / "m.json", {"b": math.nan, "a": [{"c": math.inf}, 1.5]})
    assert json.loads(path.read_text()) == {"a": [{"c": None}, 1.5], "b": None}
