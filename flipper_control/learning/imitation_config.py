"""The hyper-parameters of imitation training (``ImitationConfig``), apart from the training itself.

Loop configs, checkpoints and reports read, check and write these settings without torch's training code behind
them (``flipper_control.learning.imitation`` trains with them). Checks follow the project's config rules
(``sim.config_io``): an unknown field or an impossible value is a ValueError that names it; a nested ``policy``
section is a ``PolicyConfig`` whose errors name ``policy``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from flipper_control.policy import PolicyConfig
from sim.config_io import config_from_mapping, in_section, is_int, is_number
from sim.robot import FLIPPER_NAMES

__all__ = ["ImitationConfig", "LOSSES", "N_BODY"]

LOSSES = ("mse", "l1", "huber")
N_BODY = 2  # proprio = [pitch, roll, flipper angles...] (sim.simulator.Observation.proprio): two body angles first


@dataclass(frozen=True)
class ImitationConfig:
    """Hyper-parameters of imitation training; ``to_dict`` goes into checkpoints and reports.

    ``split_seed`` seeds the train/test split. It is fixed (0) by default rather than taken from the
    training seed so that candidates trained with different seeds on the same data share one test set
    and their ``test_mse`` values can be compared; ``None`` derives the split from the training seed.
    There is no early stopping: the only held-out data is the test set, and stopping on it would make
    the reported test error optimistic.
    """

    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0  # Adam's L2 term
    grad_clip: float = 1.0  # max global gradient norm per step (torch.nn.utils.clip_grad_norm_)
    test_fraction: float = 0.2  # share of samples (whole trajectories) held out for test_mse
    split_seed: int | None = 0
    mirror: bool = True  # left-right mirror augmentation: each training sample is mirrored with probability 1/2
    # Std (rad) of Gaussian noise added to the four flipper angles of the state input, fresh each batch; the labels
    # stay. 0 = off. Breaks the copycat shortcut of behaviour cloning (module docstring, "Flipper-angle noise").
    flipper_noise: float = 0.0
    # At most this many training samples per epoch, a fresh random subset each time (null: all of them). The
    # loop aggregates data over iterations; a cap keeps the cost of an epoch flat as the dataset grows.
    samples_per_epoch: int | None = None
    # The regression loss on the four targets: "mse" (the mean: seed 000's), "l1" (the median) or "huber" (squared
    # within huber_delta rad of the label, linear beyond). The plans' labels are discrete postures, so where two of
    # them share a state the mean lands between them; the median stays on the one most labels hold
    # (flipper_control.learning.imitation, "The loss").
    loss: str = "mse"
    huber_delta: float = 0.05
    # Keyframe weighting (0 = off): each training sample's loss counts 1 + keyframe_weight x the mean gap (rad)
    # between its four flipper targets and the flipper angles of its state, so that the samples where a plan changes
    # posture are not outvoted by those that hold one (flipper_control.learning.imitation, "Keyframes").
    keyframe_weight: float = 0.0
    log_every: int = 10  # epochs between progress lines
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    def __post_init__(self) -> None:
        if isinstance(self.policy, Mapping):  # from JSON/YAML: a plain mapping
            object.__setattr__(self, "policy", in_section("policy", PolicyConfig.from_dict, dict(self.policy)))
        problems = []
        for name in ("epochs", "batch_size", "log_every"):
            value = getattr(self, name)
            if not (is_int(value) and value >= 1):
                problems.append(f"{name} must be an integer >= 1, got {value!r}")
        if not (is_number(self.lr) and math.isfinite(self.lr) and self.lr > 0):
            problems.append(f"lr must be a positive number, got {self.lr!r}")
        if not (is_number(self.weight_decay) and math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            problems.append(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        if not (is_number(self.grad_clip) and math.isfinite(self.grad_clip) and self.grad_clip > 0):
            problems.append(f"grad_clip must be a positive finite gradient norm, got {self.grad_clip!r}")
        if not (is_number(self.test_fraction) and 0 < self.test_fraction < 1):
            problems.append(f"test_fraction must lie strictly between 0 and 1, got {self.test_fraction!r}")
        if not (self.split_seed is None or (is_int(self.split_seed) and self.split_seed >= 0)):
            problems.append(f"split_seed must be an integer >= 0 or null, got {self.split_seed!r}")
        if not isinstance(self.mirror, bool):
            problems.append(f"mirror must be true or false, got {self.mirror!r}")
        if not (is_number(self.flipper_noise) and math.isfinite(self.flipper_noise) and 0 <= self.flipper_noise <= 1.0):
            problems.append(f"flipper_noise must be a std in radians between 0 and 1, got {self.flipper_noise!r}")
        if not (self.samples_per_epoch is None or (is_int(self.samples_per_epoch) and self.samples_per_epoch >= 1)):
            problems.append(f"samples_per_epoch must be an integer >= 1 or null, got {self.samples_per_epoch!r}")
        if self.loss not in LOSSES:
            problems.append(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not (is_number(self.huber_delta) and math.isfinite(self.huber_delta) and self.huber_delta > 0):
            problems.append(f"huber_delta must be a positive number of radians, got {self.huber_delta!r}")
        if not (is_number(self.keyframe_weight) and math.isfinite(self.keyframe_weight) and 0 <= self.keyframe_weight <= 1000):
            problems.append("keyframe_weight must be a number between 0 and 1000 (per radian of gap), "
                            f"got {self.keyframe_weight!r}")
        if not isinstance(self.policy, PolicyConfig):
            problems.append(f"policy must be a PolicyConfig or a mapping of its fields, got {type(self.policy).__name__}")
        else:
            # mirroring and the flipper noise both index proprio as (pitch, roll, 4 flippers)
            four_flippers = self.policy.n_proprio == N_BODY + len(FLIPPER_NAMES)
            if self.mirror and not (four_flippers and self.policy.n_out == len(FLIPPER_NAMES)):
                problems.append("mirror needs policy.n_proprio == 6 (pitch, roll, 4 flippers) and policy.n_out == 4")
            if is_number(self.flipper_noise) and self.flipper_noise > 0 and not four_flippers:
                problems.append("flipper_noise needs policy.n_proprio == 6 (pitch, roll, 4 flippers)")
            if is_number(self.keyframe_weight) and self.keyframe_weight > 0 and not (
                    four_flippers and self.policy.n_out == len(FLIPPER_NAMES)):
                problems.append("keyframe_weight needs policy.n_proprio == 6 (pitch, roll, 4 flippers) and policy.n_out == 4")
            if self.policy.members != 1:  # trained together, the members would be one wider network, not an ensemble
                problems.append(f"policy.members must be 1, got {self.policy.members}: an ensemble averages policies "
                                "trained one by one (the loop's ensemble: true, flipper train-policy --ensemble)")
        if problems:
            raise ValueError("ImitationConfig: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready mapping; ``policy`` becomes ``PolicyConfig.to_dict()``."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["policy"] = self.policy.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImitationConfig:
        """Inverse of ``to_dict``; unknown keys are an error naming them (a typo must not become a default)."""
        return config_from_mapping(cls, data, "ImitationConfig")

