"""Task samplers against closed forms.

Every family: parameters and inputs inside their ranges and, over 10,000
tasks, within a few percent of the intended distribution's mean and std;
targets equal to the family's formula recomputed here in numpy from the
sampled parameters; shapes for d = 1 and d = 10; same seed, same tasks;
support and query inputs disjoint.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metarun import config as config_mod
from metarun.tasks import FAMILIES, TaskBatch, make_family, make_generator

N_TASKS = 10_000


def family(name: str, **task):
    return make_family(config_mod.resolve({"task": {"family": name, **task}}).task)


def draw(name: str, n: int = N_TASKS, seed: int = 0, **task) -> TaskBatch:
    return family(name, **task).sample(n, make_generator(seed, "test"))


def np_(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def assert_dist(values: torch.Tensor | np.ndarray, mean: float, std: float, what: str) -> None:
    """Sample mean within 4% of a std of `mean` (4 standard errors at 10,000
    draws) and sample std within 3% of `std`."""
    v = np.asarray(values if isinstance(values, np.ndarray) else np_(values)).ravel()
    assert abs(v.mean() - mean) <= 0.04 * std, f"{what}: mean {v.mean():.4f}, expected {mean:.4f}"
    assert abs(v.std() / std - 1) <= 0.03, f"{what}: std {v.std():.4f}, expected {std:.4f}"


def assert_uniform(values, low: float, high: float, what: str) -> None:
    v = np_(values)
    assert v.min() >= low and v.max() <= high, f"{what}: outside [{low}, {high}]"
    assert_dist(v, (low + high) / 2, (high - low) / math.sqrt(12), what)


# --------------------------------------------------------------------------- distributions and formulas


def test_sinusoid():
    b = draw("sinusoid", amplitude=[0.5, 4.0], phase=[0.0, 3.0], frequency=[0.8, 1.2], x_range=[-4.0, 5.0])
    p = b.params
    assert_uniform(p["amplitude"], 0.5, 4.0, "amplitude")
    assert_uniform(p["phase"], 0.0, 3.0, "phase")
    assert_uniform(p["frequency"], 0.8, 1.2, "frequency")
    assert_uniform(b.support_x, -4.0, 5.0, "support x")
    assert_uniform(b.query_x, -4.0, 5.0, "query x")
    for x, y in ((b.support_x, b.support_y), (b.query_x, b.query_y)):
        expected = np_(p["amplitude"]) * np.sin(np_(p["frequency"]) * np_(x) - np_(p["phase"]))
        np.testing.assert_allclose(np_(y), expected, atol=1e-4)


def test_sinusoid_frequency_defaults_to_one():
    b = draw("sinusoid", n=100)
    assert torch.all(b.params["frequency"] == 1.0)


@pytest.mark.parametrize("dim", [1, 10])
def test_linear(dim):
    b = draw("linear", slope=[-2.0, 1.0], intercept=[0.5, 3.0], x_range=[-5.0, 5.0], dim=dim)
    p = b.params
    assert p["slope"].shape == (N_TASKS, 1, dim)
    assert_uniform(p["slope"], -2.0, 1.0, "slope")
    assert_uniform(p["intercept"], 0.5, 3.0, "intercept")
    assert_uniform(b.support_x, -5.0, 5.0, "x")
    a, c = np_(p["slope"])[:, 0], np_(p["intercept"])[:, 0]  # [B, d], [B, 1]
    expected = np.einsum("bnd,bd->bn", np_(b.query_x), a)[..., None] + c[:, None]
    np.testing.assert_allclose(np_(b.query_y), expected, atol=1e-4)


def test_polynomial():
    b = draw("polynomial", degree=4, coefficient=[-0.5, 1.5], x_range=[-1.5, 2.0])
    coef = b.params["coefficients"]
    assert coef.shape == (N_TASKS, 1, 5)
    assert_uniform(coef, -0.5, 1.5, "coefficients")
    assert_uniform(b.support_x, -1.5, 2.0, "x")
    c, x = np_(coef)[:, 0], np_(b.support_x)[..., 0]
    expected = np.stack([np.polyval(c[i, ::-1], x[i]) for i in range(200)])  # polyval wants c_D first
    np.testing.assert_allclose(np_(b.support_y)[:200, :, 0], expected, atol=1e-4)


def test_harmonic_defaults():
    b = draw("harmonic")
    p = b.params
    assert_uniform(p["frequency"], 5.0, 7.0, "frequency")
    assert_dist(p["amplitudes"], 0.0, 1.0, "amplitudes")
    assert_uniform(p["phases"], 0.0, 2 * math.pi, "phases")
    assert_uniform(p["center"], -4.0, 4.0, "center")
    # x ~ N(mu, 1) around each task's centre: the offsets are standard normal.
    assert_dist(np_(b.query_x) - np_(p["center"]), 0.0, 1.0, "x - mu")
    w, a, ph, x = np_(p["frequency"]), np_(p["amplitudes"]), np_(p["phases"]), np_(b.query_x)
    expected = a[..., :1] * np.sin(w * x + ph[..., :1]) + a[..., 1:] * np.sin(2 * w * x + ph[..., 1:])
    np.testing.assert_allclose(np_(b.query_y), expected, atol=1e-4)


def test_sinusoid_line():
    b = draw("sinusoid_line", line_probability=0.3, slope=[-1.0, 2.0], intercept=[-3.0, 0.0])
    p = b.params
    is_line = np_(p["is_line"])
    assert set(np.unique(is_line)) <= {0.0, 1.0}
    assert abs(is_line.mean() - 0.3) < 4 * math.sqrt(0.3 * 0.7 / N_TASKS)
    assert_uniform(p["slope"], -1.0, 2.0, "slope")
    assert_uniform(p["intercept"], -3.0, 0.0, "intercept")
    assert_uniform(p["amplitude"], 0.1, 5.0, "amplitude")
    assert_uniform(b.support_x, -5.0, 5.0, "x")
    x = np_(b.support_x)
    line = np_(p["slope"]) * x + np_(p["intercept"])
    sine = np_(p["amplitude"]) * np.sin(np_(p["frequency"]) * x - np_(p["phase"]))
    np.testing.assert_allclose(np_(b.support_y), np.where(is_line == 1.0, line, sine), atol=1e-4)


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_sinusoid_line_extremes(p):
    assert torch.all(draw("sinusoid_line", n=200, line_probability=p).params["is_line"] == p)


def se_cov(x: np.ndarray, lengthscale: np.ndarray, scale: np.ndarray, noise: float) -> np.ndarray:
    """Covariance of the observed y: s^2 exp(-|x-x'|^2 / 2 l^2) + noise^2 I. x [B, N, d]."""
    d2 = ((x[:, :, None, :] - x[:, None, :, :]) ** 2).sum(-1)
    return scale**2 * np.exp(-d2 / (2 * lengthscale**2)) + noise**2 * np.eye(x.shape[1])


@pytest.mark.parametrize("dim", [1, 3])
def test_gp_targets_have_the_kernel_covariance(dim):
    """Whitened by the covariance computed here, the targets of all K + Q
    points must be independent standard normals."""
    noise = 0.05
    b = draw("gp", lengthscale=[0.3, 0.6], scale=[0.5, 2.0], noise_std=noise, dim=dim)
    p = b.params
    assert_uniform(p["lengthscale"], 0.3, 0.6, "lengthscale")
    assert_uniform(p["scale"], 0.5, 2.0, "scale")
    assert_uniform(b.support_x, -2.0, 2.0, "x")
    x = np.concatenate([np_(b.support_x), np_(b.query_x)], axis=1)  # [B, N, d]
    y = np.concatenate([np_(b.support_y), np_(b.query_y)], axis=1)[..., 0]  # [B, N]
    chol = np.linalg.cholesky(se_cov(x, np_(p["lengthscale"]), np_(p["scale"]), noise))
    white = np.linalg.solve(chol, y[..., None])[..., 0]  # [B, N]
    assert_dist(white, 0.0, 1.0, "whitened y")
    lag1 = (white[:, 1:] * white[:, :-1]).mean()
    assert abs(lag1) < 0.03, f"whitened neighbours correlate: {lag1:.4f}"


def test_gp_defaults():
    cfg = family("gp").cfg
    assert (cfg.lengthscale, cfg.scale, cfg.noise_std, cfg.x_range) == ([0.4, 0.4], [1.0, 1.0], 0.02, [-2.0, 2.0])
    b = draw("gp", n=2000)
    # Marginal variance of y is scale^2 + noise^2.
    assert_dist(torch.cat([b.support_y, b.query_y], 1), 0.0, math.sqrt(1.0 + 0.02**2), "y")


def test_gp_many_points_stay_finite():
    """The float64 Cholesky with jitter copes with 500 points on [-2, 2]."""
    b = family("gp", noise_std=0.0).sample(8, make_generator(0, "test"), support_shots=10, query_shots=490)
    assert torch.isfinite(b.query_y).all()
    assert b.query_y.dtype == torch.float32


def random_mlp_reference(params: dict, x: np.ndarray, task: int, activation: str) -> np.ndarray:
    """One task's network, layer by layer, in numpy."""
    act = {"relu": lambda h: np.maximum(h, 0.0), "tanh": np.tanh}[activation]
    layers = len(params) // 2
    h = x
    for i in range(layers):
        h = h @ np_(params[f"weight{i}"][task]).T + np_(params[f"bias{i}"][task])
        if i < layers - 1:
            h = act(h)
    return h


@pytest.mark.parametrize("dim,activation", [(10, "relu"), (1, "tanh")])
def test_random_mlp(dim, activation):
    b = draw("random_mlp", dim=dim, hidden=[16, 8], activation=activation, weight_gain=1.5, bias_std=0.2,
             x_range=[-1.0, 3.0])
    p = b.params
    widths = [dim, 16, 8, 1]
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        assert p[f"weight{i}"].shape == (N_TASKS, fan_out, fan_in)
        assert_dist(p[f"weight{i}"], 0.0, 1.5 / math.sqrt(fan_in), f"weight{i}")
        assert_dist(p[f"bias{i}"], 0.0, 0.2, f"bias{i}")
    assert_uniform(b.support_x, -1.0, 3.0, "x")
    for task in range(0, N_TASKS, 500):
        expected = random_mlp_reference(p, np_(b.query_x[task]), task, activation)
        np.testing.assert_allclose(np_(b.query_y[task]), expected, atol=1e-4)


# --------------------------------------------------------------------------- every family


# Families with an input dimension are also drawn at d = 10 (random_mlp's default).
CASES = [(name, {}) for name in FAMILIES] + [("linear", {"dim": 10}), ("gp", {"dim": 10}), ("random_mlp", {"dim": 1})]
IDS = [name + "".join(f"-{k}{v}" for k, v in extra.items()) for name, extra in CASES]


@pytest.mark.parametrize("name,extra", CASES, ids=IDS)
def test_shapes_dtype_device(name, extra):
    fam = family(name, **extra)
    expected_dx = extra.get("dim", 10 if name == "random_mlp" else 1)
    assert fam.dx == expected_dx and fam.dy == 1
    b = fam.sample(7, make_generator(1, "test"), support_shots=5, query_shots=13)
    assert b.support_x.shape == (7, 5, expected_dx) and b.query_x.shape == (7, 13, expected_dx)
    assert b.support_y.shape == (7, 5, 1) and b.query_y.shape == (7, 13, 1)
    for t in (*b.tensors(), *b.params.values()):
        assert t.dtype == torch.float32 and t.device.type == "cpu" and t.shape[0] == 7
        assert torch.isfinite(t).all()
    default = fam.sample(3, make_generator(1, "test"))
    assert default.support_x.shape[1] == fam.cfg.support_shots and default.query_x.shape[1] == fam.cfg.query_shots


@pytest.mark.parametrize("name,extra", CASES, ids=IDS)
def test_same_seed_same_tasks(name, extra):
    fam = family(name, **extra)
    a, b = (fam.sample(50, make_generator(3, "test")) for _ in range(2))
    c = fam.sample(50, make_generator(4, "test"))
    for ta, tb, tc in zip(a.tensors(), b.tensors(), c.tensors()):
        assert torch.equal(ta, tb)
        assert not torch.equal(ta, tc)
    assert a.params.keys() == b.params.keys()
    assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)


@pytest.mark.parametrize("name,extra", CASES, ids=IDS)
def test_support_and_query_disjoint(name, extra):
    b = family(name, **extra).sample(500, make_generator(5, "test"), support_shots=10, query_shots=30)
    x = torch.cat([b.support_x, b.query_x], 1)  # [B, 40, dx]
    same = (x[:, :, None, :] == x[:, None, :, :]).all(-1)  # [B, 40, 40]: point i equals point j
    off_diagonal = same & ~torch.eye(40, dtype=torch.bool)
    assert not off_diagonal.any(), "a support or query input repeats within a task"


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_noise_std_is_added_to_targets(name):
    """Same seed with and without noise: the difference is the noise, with the configured std."""
    clean = family(name, noise_std=0.0).sample(2000, make_generator(6, "test"))
    noisy = family(name, noise_std=0.3).sample(2000, make_generator(6, "test"))
    assert torch.equal(clean.support_x, noisy.support_x)  # noise is drawn last: same functions, same points
    diff = np.concatenate([np_(noisy.support_y - clean.support_y), np_(noisy.query_y - clean.query_y)])
    assert_dist(diff, 0.0, 0.3, "noise")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_sampling_runs_on_the_generators_device(name):
    """All draws come from the explicit generator and land on its device."""
    b = family(name).sample(4, make_generator(0, "test", "cuda"))
    assert all(t.device.type == "cuda" for t in (*b.tensors(), *b.params.values()))
