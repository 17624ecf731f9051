"""Data-parallel meta-training: 2 gloo ranks under torchrun against one process.

The references are independent of the distributed code: a plain single-process
run with the same total meta-batch (the world-size-1 path never touches
torch.distributed), and the task stream drawn directly from the seeded
generator.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_dict
from distributed_worker import recording_steps

from metarun import config as config_mod
from metarun import distributed
from metarun.errors import UserError
from metarun.rundir import load_checkpoint
from metarun.tasks import make_family, make_generator
from metarun.train import train

WORKER = Path(__file__).with_name("distributed_worker.py")
TORCHRUN = Path(sys.executable).with_name("torchrun")
META_BATCH, ITERATIONS = 4, 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def final_params(run_dir: Path) -> torch.Tensor:
    model = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    return torch.cat([v.reshape(-1) for v in model.values()])


def loss_columns(run_dir: Path) -> list[list[float]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [[float(row[c]) for c in ("support_loss", "query_loss_pre", "query_loss")] for row in csv.DictReader(f)]


# Reptile's update is not a gradient of a loss: it is averaged over ranks the same way.
@pytest.fixture(scope="module", params=[{"name": "maml"}, {"name": "reptile", "inner_lr": 0.1}], ids=["maml", "reptile"])
def runs(tmp_path_factory, request):
    """One 2-rank torchrun launch and one single-process run of the same config."""
    tmp = tmp_path_factory.mktemp("dist")
    data = tiny_dict(algorithm=request.param,
                     train={"meta_batch_size": META_BATCH, "iterations": ITERATIONS, "meta_lr": 0.01,
                            "checkpoint_every": 3, "val_every": 3})
    config = tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump(data))

    # Loopback only: the rendezvous, and gloo's sockets, stay on 127.0.0.1.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}
    launch = subprocess.run(
        [str(TORCHRUN), "--nnodes=1", "--nproc_per_node=2", "--rdzv_backend=c10d",
         f"--rdzv_endpoint=127.0.0.1:{free_port()}", str(WORKER), str(tmp),
         "train", str(config), "--runs-dir", str(tmp / "runs-2"), "--quiet"],
        capture_output=True, text=True, env=env, timeout=120)
    assert launch.returncode == 0, launch.stderr[-3000:]

    cfg = config_mod.resolve(data)
    with recording_steps() as single:
        single_run = train(cfg, tmp / "runs-1", quiet=True)
    return {"tmp": tmp, "cfg": cfg, "stdout": launch.stdout, "single": single, "single_run": single_run.path,
            "ranks": [torch.load(tmp / f"rank{r}.pt") for r in range(2)]}


def test_parameters_identical_on_every_rank_after_every_step(runs):
    rank0, rank1 = runs["ranks"]
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert len(rank0["params"]) == len(rank1["params"]) == ITERATIONS
    for step, (p0, p1) in enumerate(zip(rank0["params"], rank1["params"])):
        assert torch.equal(p0, p1), f"ranks disagree after step {step + 1}"


def test_two_ranks_match_one_process_with_the_same_meta_batch(runs):
    rank0, single = runs["ranks"][0], runs["single"]
    assert single["world_size"] == 1 and len(single["params"]) == ITERATIONS
    for step, (p2, p1) in enumerate(zip(rank0["params"], single["params"])):
        assert torch.allclose(p2, p1, rtol=0, atol=1e-6), f"step {step + 1}: max diff {(p2 - p1).abs().max():.2e}"
    (run_dir,) = (runs["tmp"] / "runs-2").iterdir()
    final_2, final_1 = final_params(run_dir), final_params(runs["single_run"])
    assert torch.allclose(final_2, final_1, rtol=0, atol=1e-6)
    # Not vacuous: training moved the parameters far more than the tolerance.
    first = rank0["params"][0]
    assert (final_2 - first).abs().max() > 1e-3
    # metrics.csv holds the stats averaged over ranks: the whole meta-batch's losses.
    for row2, row1 in zip(loss_columns(run_dir), loss_columns(runs["single_run"]), strict=True):
        assert row2 == pytest.approx(row1, rel=1e-5)


def test_ranks_train_on_disjoint_halves_of_one_process_tasks(runs):
    rank0, rank1 = runs["ranks"]
    # Reference: the task stream drawn straight from the seeded generator.
    family, gen = make_family(runs["cfg"].task), make_generator(runs["cfg"].seed, "train")
    for step in range(ITERATIONS):
        expected = family.sample(META_BATCH, gen).support_x  # [B, K, dx]
        assert torch.equal(rank0["support_x"][step], expected[: META_BATCH // 2])
        assert torch.equal(rank1["support_x"][step], expected[META_BATCH // 2:])
        assert not torch.equal(rank0["support_x"][step], rank1["support_x"][step])
        assert torch.equal(runs["single"]["support_x"][step], expected)


def test_only_rank_zero_writes_one_run_directory(runs):
    entries = list((runs["tmp"] / "runs-2").iterdir())
    assert len(entries) == 1 and entries[0].is_dir()
    run_dir = entries[0]
    assert runs["stdout"].split() == [str(run_dir)]  # the path printed once, by rank 0
    info = json.loads((run_dir / "run.json").read_text())
    assert info["world_size"] == 2 and info["status"] == "completed"
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["world_size"] == 2
    assert json.loads((runs["single_run"] / "run.json").read_text())["world_size"] == 1
    rows = loss_columns(run_dir)
    assert len(rows) == ITERATIONS  # log_every=1: one row per iteration, not one per rank


def test_indivisible_meta_batch_is_one_line_and_no_run_directory(cli, write_config, tmp_path, monkeypatch):
    # What each torchrun worker sees: WORLD_SIZE is set; the check runs before
    # joining the process group, so no launcher is needed to exercise it.
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = cli("train", write_config(train={"meta_batch_size": 3}), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "metarun: error: train.meta_batch_size: 3 tasks cannot be split evenly over 2 processes; use a multiple of 2"]
    assert not (tmp_path / "runs").exists()


def test_check_world_size_on_resume():
    distributed.check_world_size(1, current=1)
    distributed.check_world_size(None, current=1)  # runs made before world_size was recorded
    distributed.check_world_size(4, current=4)
    with pytest.raises(UserError, match=r"^resume: the run was trained with world size 2 but this launch has 1 process"):
        distributed.check_world_size(2, current=1)
    with pytest.raises(UserError, match="world size 1 but this launch has 2"):
        distributed.check_world_size(None, current=2)


def test_single_process_helpers_are_no_ops():
    assert not distributed.is_distributed() and distributed.world_size() == 1 and distributed.is_main()
    family = make_family(config_mod.resolve(tiny_dict()).task)
    batch = family.sample(4, make_generator(0, "train"))
    assert distributed.my_share(batch) is batch
    stats = torch.tensor([1.0, 2.0])
    assert torch.equal(distributed.mean_over_ranks(stats), stats)
