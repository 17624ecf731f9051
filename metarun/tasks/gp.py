"""Functions drawn from a Gaussian process with a squared-exponential kernel,
the task distribution of the neural-process papers."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metarun.config import Range, TaskConfig, option
from metarun.tasks.base import TaskBatch, TaskFamily, uniform

# Added to the kernel's diagonal (times scale^2) so the Cholesky factor exists
# even when two inputs nearly coincide; far below the default observation noise.
JITTER = 1e-6


@dataclass
class GPConfig(TaskConfig):
    noise_std: float = option(0.02, "std of the Gaussian observation noise added to every target y", min=0.0)
    lengthscale: Range = option([0.4, 0.4], "kernel lengthscale l ~ U[low, high]", gt=0.0)
    scale: Range = option([1.0, 1.0], "kernel signal scale s ~ U[low, high] (the prior std of f)", gt=0.0)
    x_range: Range = option([-2.0, 2.0], "each input component x_i ~ U[low, high]")
    dim: int = option(1, "input dimension d", min=1)


def se_kernel(x: torch.Tensor, lengthscale: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """k(x, x') = s^2 exp(-|x - x'|^2 / (2 l^2)). x [B, N, d], l and s [B, 1, 1] -> [B, N, N]."""
    sq = (x * x).sum(-1)  # [B, N]
    # |x - x'|^2 through inner products: no [B, N, N, d] intermediate for large d.
    dist2 = (sq[:, :, None] + sq[:, None, :] - 2 * x @ x.transpose(-1, -2)).clamp_min(0.0)
    return scale**2 * torch.exp(-0.5 * dist2 / lengthscale**2)


class GP(TaskFamily):
    """f ~ GP(0, s^2 exp(-|x - x'|^2 / 2 l^2)), y = f(x) + noise; x ~ U[-2, 2] by default."""

    name = "gp"
    Config = GPConfig

    def sample_params(self, n_tasks, gen):
        shape = (n_tasks, 1, 1)
        return {"lengthscale": uniform(self.cfg.lengthscale, shape, gen), "scale": uniform(self.cfg.scale, shape, gen)}

    def function(self, params, x):
        raise NotImplementedError("a GP task has no closed-form function: its targets are drawn jointly in sample()")

    def sample(self, n_tasks, gen, support_shots=None, query_shots=None) -> TaskBatch:
        # Support and query must come from the same function, so all K + Q
        # points are drawn jointly from one multivariate normal per task.
        k = support_shots or self.cfg.support_shots
        q = query_shots or self.cfg.query_shots
        params = self.sample_params(n_tasks, gen)
        x = self.sample_inputs(params, k + q, gen)  # [B, K + Q, d]
        # float64 for the factorisation: float32 Cholesky fails on these
        # nearly singular kernels (smooth functions, many close points).
        cov = se_kernel(x.double(), params["lengthscale"].double(), params["scale"].double())  # [B, N, N]
        eye = torch.eye(k + q, dtype=cov.dtype, device=cov.device)
        chol = torch.linalg.cholesky(cov + JITTER * params["scale"].double() ** 2 * eye)
        z = torch.randn((n_tasks, k + q, 1), generator=gen, device=gen.device, dtype=torch.float64)
        y = self.noisy((chol @ z).to(x.dtype), gen)  # [B, K + Q, 1]
        return TaskBatch(x[:, :k], y[:, :k], x[:, k:], y[:, k:], params)
