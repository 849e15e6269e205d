"""Pipeline presets: one nested config per component, shared values set once in `build`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from distill.dmd import DMDConfig
from distill.ode_init import ODEInitConfig
from distill.ode_pairs import ODEPairsConfig
from distill.train_heads import HeadsTrainConfig
from distill.train_teacher import TeacherTrainConfig
from distill.train_vae import VAETrainConfig
from models.schedule import ScheduleConfig
from models.vae import VAEConfig


@dataclass
class CollectSettings:
    episodes: int = 200
    workers: int = 2
    max_frames: int = 1000
    episodes_per_shard: int = 8


@dataclass
class PipelineConfig:
    preset: str = "default"
    seed: int = 0
    dit_size: str = "S"
    heldout_fraction: float = 0.1
    collect: CollectSettings = field(default_factory=CollectSettings)
    vae: VAETrainConfig = field(default_factory=VAETrainConfig)
    heads: HeadsTrainConfig = field(default_factory=HeadsTrainConfig)
    teacher: TeacherTrainConfig = field(default_factory=TeacherTrainConfig)
    causal_teacher_steps: int = 0  # trained only for the causal-teacher ablation
    ode_pairs: ODEPairsConfig = field(default_factory=ODEPairsConfig)
    ode_init: ODEInitConfig = field(default_factory=ODEInitConfig)
    dmd: DMDConfig = field(default_factory=DMDConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)


def tiny() -> PipelineConfig:
    """End to end in a couple of minutes on 2 cores: for tests and smoke runs."""
    return PipelineConfig(
        preset="tiny", dit_size="tiny", heldout_fraction=0.25,
        collect=CollectSettings(episodes=8, workers=1, max_frames=96, episodes_per_shard=4),
        vae=VAETrainConfig(steps=40, batch_size=4, clip_frames=8, save_every=20, stats_clips=16, heldout_clips=4,
                           eval_batch_size=4, vae=VAEConfig(base_channels=8, mid_channels=16, channel_mult=(1, 1, 1), num_res_blocks=(0, 0, 1), num_temporal_blocks=1)),
        heads=HeadsTrainConfig(steps=30, batch_size=16, save_every=15),
        teacher=TeacherTrainConfig(steps=60, batch_size=4, clip_latent_frames=4, lr=1e-3, warmup_steps=5, save_every=30, log_every=5),
        causal_teacher_steps=30,
        ode_pairs=ODEPairsConfig(num_pairs=8, batch_size=4, clip_latent_frames=4, num_steps=6),
        ode_init=ODEInitConfig(steps=30, batch_size=4, lr=1e-3, save_every=15, log_every=5),
        dmd=DMDConfig(steps=4, batch_size=2, clip_latent_frames=4, ttur=2, lr_generator=1e-3, lr_fake=1e-3, save_every=2, log_every=1),
    )


def default() -> PipelineConfig:
    """The shipped cartpole checkpoint: ~1.5 hours on one core of this 2-core CPU (the second core stays
    free; two busy torch threads slow ~10x as soon as anything else runs)."""
    return PipelineConfig(
        preset="default", dit_size="S",
        collect=CollectSettings(episodes=160, workers=2, max_frames=1000),
        vae=VAETrainConfig(steps=900, batch_size=16, clip_frames=8, save_every=100),
        heads=HeadsTrainConfig(steps=1200),
        teacher=TeacherTrainConfig(steps=2000, batch_size=16, clip_latent_frames=8, lr=4e-4, warmup_steps=200),
        causal_teacher_steps=1500,
        ode_pairs=ODEPairsConfig(num_pairs=256, batch_size=16, clip_latent_frames=8, num_steps=24),
        ode_init=ODEInitConfig(steps=400, batch_size=8, lr=1e-4),
        dmd=DMDConfig(steps=75, batch_size=8, clip_latent_frames=8, ttur=5, lr_generator=5e-5, lr_fake=5e-5),
    )


PRESETS = {"tiny": tiny, "default": default}


def get_preset(name: str) -> PipelineConfig:
    if name not in PRESETS:
        raise ValueError(f"--preset: unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


def to_dict(cfg: PipelineConfig) -> dict:
    return dataclasses.asdict(cfg)
