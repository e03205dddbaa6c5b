"""The temperature head of the `introspective` method and its hybrid action distribution.

The head phi is an MLP d -> d * hidden_ratio -> 3 on the policy's last-layer hidden state
h_t. Its outputs (u_c, u_a, u_b) parameterise a two-part action: a gate
c_t ~ Bernoulli(sigmoid(u_c)) that decides whether to pick a new temperature, and a
z_t ~ Beta(softplus(u_a) + eps, softplus(u_b) + eps) that places the new temperature in
[T_min, T_max]. The functions here are pure tensor code shared by sampling (one decoding
step, [B, d]) and the loss (whole completions, [b, L, d]), so both compute the same log-prob.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: z is kept this far inside (0, 1) so log Beta(z; a, b) stays finite.
Z_BOUND = 1e-6

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
}


def _f32(x: torch.Tensor) -> torch.Tensor:
    """x in float32; a plain Python check, so float32 inputs cost no dispatch."""
    return x if x.dtype == torch.float32 else x.float()


def inverse_softplus(y: float) -> float:
    """x with softplus(x) = y (y > 0), written to stay finite for large and small y."""
    return y + math.log(-math.expm1(-y))


class TemperatureHead(nn.Module):
    """MLP d -> hidden -> 3 returning the gate logit u_c [...] and Beta parameters (a, b) [..., 2].

    Always computes in float32 (hidden states may be bf16 on GPU; weights are cast too, which
    is free when they already are float32), so the action distribution does not depend on the
    policy's precision.
    """

    def __init__(self, hidden_size: int, inner_size: int, activation: str, eps: float) -> None:
        super().__init__()
        self.hidden_size, self.eps = hidden_size, eps
        self.fc1 = nn.Linear(hidden_size, inner_size)
        self.act = ACTIVATIONS[activation]()
        self.fc2 = nn.Linear(inner_size, 3)

    @torch.no_grad()
    def init_output(self, gate_prob: float, beta_mean: float, concentration: float) -> None:
        """Zero the last layer's weights and set its biases so that, for every h,
        sigmoid(u_c) = gate_prob and the Beta has mean `beta_mean`, a + b = `concentration`."""
        a = beta_mean * concentration - self.eps
        b = (1.0 - beta_mean) * concentration - self.eps
        self.fc2.weight.zero_()
        bias = [math.log(gate_prob / (1.0 - gate_prob)), inverse_softplus(a), inverse_softplus(b)]
        self.fc2.bias.copy_(torch.tensor(bias))

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if torch.is_autocast_enabled(hidden.device.type):
            # bf16-mixed would run these matmuls in bf16; the Beta sampler and the action
            # log-probs need float32. (Checked first: the context costs time every token.)
            with torch.autocast(hidden.device.type, enabled=False):
                return self._forward(hidden)
        return self._forward(hidden)

    def _forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.linear(_f32(hidden), _f32(self.fc1.weight), _f32(self.fc1.bias))
        u = F.linear(self.act.forward(x), _f32(self.fc2.weight), _f32(self.fc2.bias))
        return u[..., 0], F.softplus(u[..., 1:]) + self.eps


def sample_action(
    gate_logit: torch.Tensor, beta_ab: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw (gate in {0., 1.}, z in [Z_BOUND, 1 - Z_BOUND]) with torch's global RNG.

    z is drawn for every row (vectorised, no host sync); rows with gate 0 ignore it.
    """
    gate = torch.bernoulli(torch.sigmoid(gate_logit))
    # Beta(a, b) is the first coordinate of Dirichlet(a, b): one kernel, the same op that
    # torch.distributions.Beta uses, without building distribution objects every step.
    z = torch._sample_dirichlet(beta_ab)[..., 0]
    return gate, z.clamp(Z_BOUND, 1.0 - Z_BOUND)


def hybrid_logprob(
    gate_logit: torch.Tensor, beta_ab: torch.Tensor, gate: torch.Tensor, z: torch.Tensor
) -> torch.Tensor:
    """log pi_phi = log P(c) + c * log Beta(z; a, b), elementwise over the leading dims.

    `gate` is float 0./1. and z must lie in [Z_BOUND, 1 - Z_BOUND] (as `sample_action` returns
    it), so log Beta is finite and c * log Beta is exact and passes no gradient where c = 0.
    Written with few ops: it runs every decoding step.
    """
    # log P(c) = log sigmoid(u) for c = 1 and log sigmoid(-u) = log sigmoid(u) - u for c = 0.
    log_gate = F.logsigmoid(gate_logit) - (1.0 - gate) * gate_logit
    log_zz = torch.stack([z, 1.0 - z], dim=-1).log()
    log_beta = ((beta_ab - 1.0) * log_zz - torch.lgamma(beta_ab)).sum(-1) + torch.lgamma(
        beta_ab.sum(-1)
    )
    return log_gate + gate * log_beta
