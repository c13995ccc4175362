"""Q-networks: multilayer perceptrons from an observation vector to one value per discrete action.

Seed 004's RAM network is this with input 5 x 128 stacked RAM bytes scaled by 1/255, two hidden layers of 128
ReLU units and 9 outputs (99,721 parameters, as the seed counts them), initialised He-uniform (weights from
U(-sqrt(6 / fan_in), sqrt(6 / fan_in)), biases 0, Keras' HeUniform). The config travels in the checkpoint's
sidecar, so a loaded network is rebuilt with the very shapes and input scaling it was trained with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

__all__ = ["QNetwork", "QNetworkConfig"]

_INITS = ("he_uniform", "torch_default")
_MAX_PARAMS = 50_000_000  # a bound on what a (possibly hostile) sidecar may make us allocate


@dataclass(frozen=True)
class QNetworkConfig:
    """Shapes and initialisation of a ``QNetwork``."""

    obs_dim: int
    n_actions: int
    hidden: tuple[int, ...] = (128, 128)
    input_scale: float = 1.0  # observations are multiplied by this first (1/255 for Atari RAM bytes)
    init: str = "he_uniform"

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        for name, value in (("obs_dim", self.obs_dim), ("n_actions", self.n_actions), *(("hidden", h) for h in self.hidden)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"QNetworkConfig.{name} must be integers >= 1, got {value!r}")
        if self.init not in _INITS:
            raise ValueError(f"QNetworkConfig.init must be one of {', '.join(_INITS)}, got {self.init!r}")
        if not (isinstance(self.input_scale, (int, float)) and 0 < self.input_scale < float("inf")):
            raise ValueError(f"QNetworkConfig.input_scale must be a finite number > 0, got {self.input_scale!r}")
        sizes = (self.obs_dim, *self.hidden, self.n_actions)
        if sum((a + 1) * b for a, b in zip(sizes, sizes[1:], strict=False)) > _MAX_PARAMS:
            raise ValueError(f"QNetworkConfig asks for more than {_MAX_PARAMS} parameters: {sizes}")

    def to_dict(self) -> dict:
        """A JSON-ready dict (the checkpoint sidecar's ``config``)."""
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> QNetworkConfig:
        """Inverse of ``to_dict``; unknown or missing keys are an error."""
        if not isinstance(data, dict):
            raise ValueError(f"a QNetworkConfig must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown QNetworkConfig field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"QNetworkConfig: {exc}") from None

    @property
    def n_params(self) -> int:
        """Weights and biases this config builds."""
        sizes = (self.obs_dim, *self.hidden, self.n_actions)
        return sum((a + 1) * b for a, b in zip(sizes, sizes[1:], strict=False))


class QNetwork(nn.Module):
    """``obs (batch, obs_dim) -> Q (batch, n_actions)``: Linear-ReLU layers and a linear head."""

    def __init__(self, config: QNetworkConfig):
        super().__init__()
        self.config = config
        sizes = (config.obs_dim, *config.hidden)
        layers: list[nn.Module] = []
        for a, b in zip(sizes, sizes[1:], strict=False):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], config.n_actions))
        self.net = nn.Sequential(*layers)
        if config.init == "he_uniform":
            for m in self.net:
                if isinstance(m, nn.Linear):
                    # kaiming_uniform_ with the ReLU gain has bound sqrt(2) * sqrt(3 / fan_in) = sqrt(6 / fan_in)
                    nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
                    nn.init.zeros_(m.bias)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Q-values of every action."""
        x = obs.to(torch.float32)
        if self.config.input_scale != 1.0:
            x = x * self.config.input_scale
        return self.net(x)
