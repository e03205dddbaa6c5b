"""Checkpoint saves replace the old file atomically: a failed save leaves it intact."""

from __future__ import annotations

import pytest
import torch

from tempo.rl import checkpoint_io
from tempo.rl.checkpoint_io import AtomicCheckpointIO, atomic_torch_save


def test_save_then_load_round_trips_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "ckpts" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"w": torch.arange(3.0), "step": 7}, path)
    loaded = torch.load(path, weights_only=False)
    assert loaded["step"] == 7 and torch.equal(loaded["w"], torch.arange(3.0))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_a_crash_during_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1}, path)

    def dies_halfway(obj, fh):
        fh.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_io.torch, "save", dies_halfway)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
