"""A balancing controller that acts inside DMD's self-forcing rollouts, on the frames the student
has just generated: the closed loop an agent drives the dream in.

The data's actions were chosen from the *real* state; a few chunks into a self-forcing rollout the
generated pole is no longer where the real one was, so those actions stop answering it (a script
that knows nothing of the state). An agent in the dream pushes against the lean it *sees*, and the
real-twin policy falls in the dream within ~40 frames (v8). `LatentBalancer` picks each chunk's
push from the state the frozen state head (`models.heads.StateHead`) reads off the last latent
frame before the chunk (the real context for the first chunk, the generated one afterwards), with
CartPole's linear state feedback (`agents.baselines.BalancingAgent`'s gains: push right iff
k . (x, x_dot, theta, theta_dot) > 0) and a random push with probability `epsilon`. The teacher then
judges the student on the states such a controller visits and on the pushes it makes there.
"""
from __future__ import annotations

from typing import Sequence

import gymnasium as gym
import numpy as np
import torch

from models.actions import ActionCodec
from models.heads import StateHead

BALANCING_GAINS = (0.3, 0.6, 12.0, 2.5)  # agents.baselines.BalancingAgent's default (x, x_dot, theta, theta_dot)


class LatentBalancer:
    """Per rollout row, the push for the next chunk from the state read off a latent frame."""

    def __init__(self, state_head: StateHead, codec: ActionCodec, gains: Sequence[float] = BALANCING_GAINS,
                 epsilon: float = 0.2):
        if state_head.config.state_dim != len(gains):
            raise ValueError(f"gains: {len(gains)} values for a state head that reads {state_head.config.state_dim} state "
                             "dimensions; pass one gain per dimension")
        if not (isinstance(codec.space, gym.spaces.Discrete) and int(codec.space.n) == 2):
            raise ValueError(f"codec: the balancing controller pushes left or right (a Discrete(2) space such as CartPole's), "
                             f"got {codec.space}")
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon: expected a probability in [0, 1], got {epsilon}")
        self.state_head, self.epsilon = state_head, float(epsilon)
        self.gains = torch.tensor(gains, dtype=torch.float32)
        self._feats = torch.from_numpy(codec.to_features(np.asarray([0, 1]))).float()  # (2, A): left, right

    @torch.no_grad()
    def actions(self, latent_frame: torch.Tensor, rng: np.random.Generator) -> np.ndarray:
        """latent_frame (B, C, 1, h, w) -> (B,) pushes (0 left, 1 right) for the chunk after it."""
        state = self.state_head.predict(latent_frame.detach())[:, -1]  # the latent frame's last video frame
        act = (state.float() @ self.gains.to(state.device) > 0).long().cpu().numpy()
        explore = rng.random(len(act)) < self.epsilon
        act[explore] = rng.integers(0, 2, int(explore.sum()))
        return act

    def hook(self, action_feats: torch.Tensor, action_null: torch.Tensor, rows: np.ndarray, frames_per_latent: int,
             rng: np.random.Generator):
        """-> (hook, record). `hook(c0, c1, last)` is what `distill.dmd.self_forcing_rollout` calls before
        generating latent frames [c0, c1) with `last` the latent frame before them: it returns that
        chunk's (action_feats, action_null), the controller's pushes on `rows` (bool, (B,)), the given
        script elsewhere. `record` = (feats, null): full copies of the script that the hook fills in as
        the rollout goes, for the scores that judge it (the model never reads them, so autograd does not
        see them change)."""
        feats, null = action_feats.clone(), action_null.clone()
        idx = torch.from_numpy(np.flatnonzero(rows)).to(feats.device)

        def hook(c0: int, c1: int, last: torch.Tensor):
            a, b = c0 * frames_per_latent, c1 * frames_per_latent
            if len(idx):
                act = self.actions(last[idx.to(last.device)], rng)
                feats[idx, a:b] = self._feats.to(feats.device)[torch.from_numpy(act).to(feats.device)][:, None]
                null[idx, a:b] = False
            return feats[:, a:b].clone(), null[:, a:b].clone()

        return hook, (feats, null)
