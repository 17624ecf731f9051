"""CNP: std above its floor, finite losses at 1 shot, context disjoint from query at eval."""

from __future__ import annotations

import math

import torch
from conftest import tiny_config

from metarun.algorithms import make_algorithm
from metarun.evaluate import evaluate
from metarun.tasks import make_family, make_generator
from metarun.train import train


def test_std_above_floor_and_losses_finite_with_one_support_point(tmp_path):
    cfg = tiny_config(algorithm={"name": "cnp", "std_floor": 0.05},
                      task={"support_shots": 1, "noise_std": 0.0}, train={"iterations": 20, "meta_lr": 0.01})
    run = train(cfg, tmp_path, quiet=True)
    result = evaluate(run.path, "last", ["eval.shots=1", "eval.tasks=50"])
    assert all(math.isfinite(v) for v in result["query_mse"]["mean"])
    assert math.isfinite(result["metrics"]["query_nll"]["mean"])

    algo = make_algorithm(cfg, 1, 1)
    algo.load_state_dict(run.load_checkpoint("last")["model"])
    batch = make_family(cfg.task).sample(50, make_generator(0, "cnp"))
    _, std = algo.predict(batch.support_x, batch.support_y, batch.query_x)
    assert (std >= 0.05).all()
    # Push the raw std output far negative: softplus underflows, the floor holds.
    with torch.no_grad():
        algo.decoder.layers[-1].bias[1] = -1e4
    mean, std = algo.predict(batch.support_x, batch.support_y, batch.query_x)
    assert (std >= 0.05).all() and torch.isfinite(algo.nll(mean, std, batch.query_y)).all()


def test_query_points_are_disjoint_from_context_at_evaluation(monkeypatch):
    cfg = tiny_config(algorithm={"name": "cnp"})
    algo = make_algorithm(cfg, 1, 1)
    batch = make_family(cfg.task).sample(6, make_generator(0, "cnp"))
    calls = []
    predict = algo.predict

    def spy(cx, cy, tx):
        calls.append((cx, cy, tx))
        return predict(cx, cy, tx)

    monkeypatch.setattr(algo, "predict", spy)
    mse = algo.adaptation_losses(batch, steps=3)
    nll = algo.eval_metrics(batch)["query_nll"]
    assert mse.shape == (6, 4) and nll.shape == (6,)
    for cx, cy, tx in calls:
        assert torch.equal(cx, batch.support_x) and torch.equal(cy, batch.support_y)
        assert torch.equal(tx, batch.query_x)
        # No query input is a context input of the same task.
        assert not (tx[:, :, None, :] == cx[:, None, :, :]).all(-1).any()
    # The query targets never reach the prediction: scrambling them leaves it unchanged.
    scrambled = type(batch)(batch.support_x, batch.support_y, batch.query_x, torch.randn_like(batch.query_y), {})
    calls.clear()
    algo.adaptation_losses(scrambled, steps=0)
    torch.testing.assert_close(predict(*calls[0]), predict(batch.support_x, batch.support_y, batch.query_x))
