"""Test helpers: a tiny random-weight world-model checkpoint (no training needed)."""
from __future__ import annotations

from pathlib import Path

import torch

from causvid_env.checkpoint import save_world_model
from causvid_env.worlds import get_world
from models.actions import space_to_dict
from models.dit import DiT, DiTConfig
from models.heads import HeadsConfig, RewardTerminationHead
from models.schedule import FlowSchedule
from models.vae import CausalVAE, VAEConfig

TINY_VAE = dict(base_channels=8, mid_channels=16, channel_mult=(1, 1, 1), num_res_blocks=(0, 0, 1), num_temporal_blocks=1)


def tiny_checkpoint(directory: str | Path, world: str = "cartpole", seed: int = 0) -> Path:
    """Random weights with every zero-initialised output perturbed, so that actions, prompts and
    context all change what the dream shows."""
    spec = get_world(world)
    torch.manual_seed(seed)
    vae = CausalVAE(VAEConfig(frame_height=spec.frame_height, frame_width=spec.frame_width, temporal_down=spec.frames_per_latent, **TINY_VAE))
    v = vae.config
    dit = DiT(DiTConfig.from_size("tiny", latent_channels=v.latent_channels, latent_height=v.latent_height, latent_width=v.latent_width,
                                  action_space=space_to_dict(spec.make_action_space()), frames_per_latent=spec.frames_per_latent,
                                  latent_frames_per_chunk=spec.latent_frames_per_chunk))
    heads = RewardTerminationHead(HeadsConfig(latent_channels=v.latent_channels, latent_height=v.latent_height,
                                              latent_width=v.latent_width, frames_per_latent=spec.frames_per_latent))
    with torch.no_grad():
        for m in (vae, dit):
            for p in m.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        heads.net[-1].bias[heads.config.frames_per_latent:] = -3.0  # terminations rare but possible
    return save_world_model(directory, dit.eval(), vae.eval(), heads.eval(), FlowSchedule(), world)
