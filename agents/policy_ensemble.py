"""Several trained policies acting as one: the mean of their action probabilities.

    python -m agents.evaluate --policy runs/agents/a,runs/agents/b --world cartpole --real --episodes 100

Each member reads the same observation with its own encoder and feature statistics; a discrete action is the most
likely one under the members' mean probabilities (or a draw from them), a Box action the mean of the members' Gaussian
means. Every member must observe alike (``obs_shape``, ``obs_mode``, ``frame_stack``) and share the action space: a
policy ensemble adds no training, only a vote among policies already trained (in the dream, for example).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from agents.policy import Policy, PolicyConfig, batched_obs

__all__ = ["PolicyEnsemble"]


class PolicyEnsemble:
    """``act(obs, info=None, deterministic=True)`` of the members' mean action distribution; ``config`` is the first
    member's (what the env must show them all)."""

    def __init__(self, members: Sequence[Policy]) -> None:
        members = list(members)
        for i, m in enumerate(members):
            if not isinstance(m, Policy):
                raise ValueError(f"policy: ensemble member {i} is {m!r}, not a trained policy directory")
        if len(members) < 2:
            raise ValueError(f"policy: an ensemble needs at least two policies, got {len(members)}")
        first = members[0].config
        for i, m in enumerate(members[1:], 1):
            c = m.config
            for name in ("obs_shape", "obs_mode", "frame_stack", "action_space"):
                if getattr(c, name) != getattr(first, name):
                    raise ValueError(f"policy: member {i} sees {name} = {getattr(c, name)!r}, member 0 "
                                     f"{getattr(first, name)!r}; an ensemble's policies must observe and act alike")
        self.members = members
        self.config: PolicyConfig = first
        self.discrete = members[0].discrete

    @torch.no_grad()
    def act(self, obs: Any, info: dict | None = None, deterministic: bool = True) -> np.ndarray:
        """Actions for one observation or a batch, as :meth:`Policy.act`."""
        x, single = batched_obs(obs, self.config.obs_shape, self.members[0].critic.weight.device)
        dists = [m.distribution(m.features(x)) for m in self.members]
        if self.discrete:
            probs = torch.stack([d.probs for d in dists]).mean(0)
            a = probs.argmax(-1) if deterministic else torch.distributions.Categorical(probs=probs).sample()
        else:
            mean = torch.stack([d.mean for d in dists]).mean(0)
            a = mean if deterministic else torch.distributions.Normal(mean, dists[0].stddev).sample()
        out = self.members[0].to_env_action(a)
        return out[0] if single else out
