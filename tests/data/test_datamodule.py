"""The training prompt stream: unchanged in one process, disjoint per-rank shards under DDP."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest

from tempo.data.arithmetic import ArithmeticTask
from tempo.data.datamodule import PromptDataModule, StepBatches

STRIDE = 10**9  # the per-seed offset of the train stream


class IndexTask:
    """Problems that are just their index, so batches show which indices were drawn."""

    name = "index"

    def train_problem(self, index: int) -> int:
        return index

    def test_problems(self) -> list[int]:
        return list(range(-10, 0))


def batches(loader) -> list[list]:
    return [list(b) for b in loader]


def ids(loader) -> list[list[int]]:
    """The generator index of every problem, batch by batch (from ids like a/train/17)."""
    return [[int(p.id.rsplit("/", 1)[1]) for p in batch] for batch in loader]


def stub_trainer(rank: int, world: int, step: int = 0) -> SimpleNamespace:
    return SimpleNamespace(global_rank=rank, world_size=world, global_step=step)


@pytest.mark.parametrize("seed", [0, 3])
def test_one_process_draws_the_same_problems_as_before(seed):
    """Batch s holds seed * 1e9 + s * per_step + i (the single-process layout, unchanged)."""
    task = ArithmeticTask(num_test=4)
    expected = [[seed * STRIDE + s * 3 + i for i in range(3)] for s in range(4)]
    dm = PromptDataModule(task, 3, 4, 4, 4, seed=seed)
    assert ids(dm.train_dataloader()) == expected  # no trainer attached
    dm.trainer = stub_trainer(0, 1)
    assert ids(dm.train_dataloader()) == expected
    same = [task.train_problem(seed * STRIDE + 5).prompt]
    assert [p.prompt for p in list(dm.train_dataloader())[1][2:]] == same


def test_ranks_draw_disjoint_shards_that_tile_the_global_batch():
    world, per_step, steps, offset = 3, 4, 5, 7
    source = IndexTask().train_problem
    shards = [
        batches(StepBatches(source, steps, per_step, offset, lambda: 0, r, world))
        for r in range(world)
    ]
    for rank, shard in enumerate(shards):
        assert len(shard) == steps and all(len(b) == per_step for b in shard)
        # rank r, step s: offset + (s * W + r) * per_step + i
        assert shard[2] == [offset + (2 * world + rank) * per_step + i for i in range(per_step)]
    for step in range(steps):
        drawn = [x for shard in shards for x in shard[step]]
        assert len(set(drawn)) == world * per_step  # no problem on two ranks
        # together: what one process with world * per_step prompts draws at that step
        one = batches(StepBatches(source, steps, world * per_step, offset, lambda: 0))
        assert sorted(drawn) == one[step]
    everything = [x for shard in shards for b in shard for x in b]
    assert len(set(everything)) == world * per_step * steps  # distinct across steps too


def test_datamodule_takes_rank_and_world_size_from_the_trainer():
    dm = PromptDataModule(IndexTask(), 2, 3, 5, 5, seed=1)
    dm.trainer = stub_trainer(rank=1, world=2)
    loader = dm.train_dataloader()
    assert (loader.rank, loader.world_size) == (1, 2)
    assert batches(loader)[0] == [STRIDE + 2, STRIDE + 3]  # block [0, 4) of step 0, second half
    dm.trainer = stub_trainer(rank=0, world=2)
    assert batches(dm.train_dataloader())[1] == [STRIDE + 4, STRIDE + 5]


def test_resume_starts_each_rank_at_its_own_batch_of_the_restored_step():
    dm = PromptDataModule(IndexTask(), 2, 4, 5, 5)
    dm.trainer = stub_trainer(rank=1, world=2, step=0)
    full = batches(dm.train_dataloader())
    dm.trainer = stub_trainer(rank=1, world=2, step=2)  # restored global step
    resumed = dm.train_dataloader()
    assert batches(resumed) == full[2:] == [[10, 11], [14, 15]]


def test_state_records_the_world_size_and_warns_when_it_changes():
    loader = StepBatches(IndexTask().train_problem, 3, 2, 0, lambda: 0, rank=1, world_size=2)
    assert loader.state_dict() == {"world_size": 2}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader.load_state_dict({"world_size": 2})
        loader.load_state_dict({})  # a checkpoint from before the world size was recorded
    with pytest.warns(UserWarning, match="trained on 4 rank"):
        loader.load_state_dict({"world_size": 4})


def test_bad_rank_is_refused():
    with pytest.raises(ValueError, match="rank 2"):
        StepBatches(IndexTask().train_problem, 3, 2, 0, lambda: 0, rank=2, world_size=2)


def test_evaluation_is_the_same_on_every_rank():
    dm = PromptDataModule(IndexTask(), 2, 3, 7, 3)
    seen = []
    for rank in range(2):
        dm.trainer = stub_trainer(rank=rank, world=2)
        seen.append(batches(dm.val_dataloader()))
    assert seen[0] == seen[1] == [[-10, -9, -8], [-7, -6, -5], [-4]]
