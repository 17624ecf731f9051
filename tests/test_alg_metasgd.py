"""Meta-SGD: learned step sizes move, their gradient is right, eval uses them."""

from __future__ import annotations

import json

import reference_algorithms as ref
import torch
from conftest import run_metarun, tiny_config

from metarun import config as config_mod
from metarun.algorithms import make_algorithm
from metarun.evaluate import held_out_tasks
from metarun.rundir import RunDir
from metarun.tasks import make_family, make_generator
from metarun.train import train


def _train(tmp_path, **train_section):
    cfg = tiny_config(algorithm={"name": "metasgd", "inner_lr": 0.01},
                      train={"iterations": 6, "meta_lr": 0.01, **train_section})
    return train(cfg, tmp_path, quiet=True)


def test_step_sizes_move_away_from_their_initial_value(tmp_path):
    run = _train(tmp_path)
    state = run.load_checkpoint("last")["model"]
    steps = {k: v for k, v in state.items() if k.startswith("step_sizes.")}
    assert len(steps) == 6  # one per weight and bias of the 1-16-16-1 MLP
    moved = torch.cat([(v - 0.01).abs().flatten() for v in steps.values()])
    assert moved.max() > 1e-3  # Adam at 0.01 for 6 steps moves them by up to ~0.06
    assert (moved > 1e-6).float().mean() > 0.5


def test_step_size_gradient_matches_central_finite_differences():
    torch.manual_seed(0)
    cfg = tiny_config(algorithm={"name": "metasgd", "inner_lr": 0.1, "inner_steps": 2},
                      model={"hidden": [3], "activation": "tanh"})
    family = make_family(cfg.task)
    algo = make_algorithm(cfg, family.dx, family.dy).double()
    with torch.no_grad():
        for p in algo.step_sizes.values():
            p.uniform_(0.05, 0.2)
    batch = family.sample(2, make_generator(0, "fd"))
    batch = type(batch)(*(t.double() for t in batch.tensors()), params={})
    loss, _ = algo.meta_loss(batch)
    loss.backward()
    h = 1e-6
    for name, p in algo.step_sizes.items():
        for i in range(p.numel()):
            with torch.no_grad():
                flat = p.view(-1)
                flat[i] += h
                up = algo.meta_loss(batch)[0].item()
                flat[i] -= 2 * h
                down = algo.meta_loss(batch)[0].item()
                flat[i] += h
            fd = (up - down) / (2 * h)
            assert abs(p.grad.view(-1)[i].item() - fd) < 1e-7 + 1e-5 * abs(fd), (name, i)


def _eval_json(*args) -> dict:
    proc = run_metarun("eval", *args, "--json", "--tasks", "30", "--steps", "2", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_eval_in_a_fresh_process_uses_the_saved_step_sizes(tmp_path):
    run = _train(tmp_path)
    learned = _eval_json(run.path, "--checkpoint", "last")["query_mse"]["mean"]
    reset = _eval_json(run.path, "--checkpoint", "last", "--inner-lr", "0.01")["query_mse"]["mean"]
    assert learned[0] == reset[0]  # same initialisation, same tasks
    assert abs(learned[1] - reset[1]) > 1e-6 * abs(reset[1])

    # And the figure is the one the saved step sizes give, by a plain per-task loop.
    cfg = config_mod.resolve(config_mod.read_yaml(run.config_path), ["eval.tasks=30"])
    algo = make_algorithm(cfg, 1, 1)
    algo.load_state_dict(run.load_checkpoint("last")["model"])
    batch = held_out_tasks(make_family(cfg.task), cfg, torch.device("cpu"))
    names = [k for k, _ in algo.net.named_parameters()]
    state = run.load_checkpoint("last")["model"]
    lrs = [state["step_sizes." + k.replace(".", "__")] for k in names]
    weights = [state["net." + k] for k in names]
    curve = ref.adaptation_curve(algo.net, weights, lrs, [True] * len(names), batch, 2)
    assert abs(curve[:, 1].mean().item() - learned[1]) < 1e-5 * abs(learned[1])


def test_checkpoint_without_step_sizes_is_refused_with_one_line(tmp_path):
    run = _train(tmp_path, iterations=2)
    state = RunDir(run.path).load_checkpoint("last")
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("step_sizes.")}
    bad = tmp_path / "no_step_sizes.pt"
    torch.save(state, bad)
    proc = run_metarun("eval", run.path, "--checkpoint", bad, "--tasks", "5", "--device", "cpu")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metarun: error:")
    assert str(bad) in lines[0] and "step sizes" in lines[0]
    assert "Traceback" not in proc.stderr
