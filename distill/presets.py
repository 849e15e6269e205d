"""Pipeline presets: one nested config per component, shared values set once in `build`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from distill.branches import BranchConfig
from distill.dmd import DMDConfig
from distill.finetune_vae_decoder import DecoderFinetuneConfig
from distill.ode_init import ODEInitConfig
from distill.ode_pairs import ODEPairsConfig
from distill.train_heads import HeadsTrainConfig, StateHeadTrainConfig
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
    context_noise: float = 0.0  # the level the env writes its cache at (recorded in the checkpoint)
    env_window_seconds: float = 0.0  # the env's default KV-cache window recorded in the checkpoint; 0 = the self-forcing
    # training window (dmd.window_frames). 10 s measured higher PSNR but tipped the pole the wrong way under a 2 s push.
    vae_from: str = ""  # a trained VAE directory to reuse instead of training the VAE stage
    init_from: str = ""  # a checkpoint directory (teacher/, student/): the teacher stage (and the causal_teacher ablation) warm-starts from its teacher
    student_init: str = "teacher"  # ODE init starts from: "teacher" (this run's, as in CausVid) or "checkpoint" (init_from's student)
    collect: CollectSettings = field(default_factory=CollectSettings)
    branches: BranchConfig = field(default_factory=BranchConfig)  # points_per_episode 0: no branching data
    vae: VAETrainConfig = field(default_factory=VAETrainConfig)
    vae_decoder: DecoderFinetuneConfig = field(default_factory=lambda: DecoderFinetuneConfig(steps=0))  # 0: no decoder fine-tune
    heads: HeadsTrainConfig = field(default_factory=HeadsTrainConfig)
    state_head: StateHeadTrainConfig = field(default_factory=StateHeadTrainConfig)  # trained when teacher.state_weight > 0
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
        branches=BranchConfig(points_per_episode=2, chunks=3, max_hold=3),
        vae=VAETrainConfig(steps=40, batch_size=4, clip_frames=8, save_every=20, stats_clips=16, heldout_clips=4,
                           eval_batch_size=4, vae=VAEConfig(base_channels=8, mid_channels=16, channel_mult=(1, 1, 1), num_res_blocks=(0, 0, 1), num_temporal_blocks=1)),
        vae_decoder=DecoderFinetuneConfig(steps=4, batch_size=2, save_every=2, log_every=1, heldout_clips=2),
        heads=HeadsTrainConfig(steps=30, batch_size=16, save_every=15),
        state_head=StateHeadTrainConfig(steps=30, batch_size=16, stats_clips=64, save_every=15),
        teacher=TeacherTrainConfig(steps=60, batch_size=4, clip_latent_frames=4, lr=1e-3, warmup_steps=5, save_every=30, log_every=5,
                                   pair_fraction=0.5, branch_fraction=0.25, state_weight=0.1),
        causal_teacher_steps=30,
        ode_pairs=ODEPairsConfig(num_pairs=8, batch_size=4, clip_latent_frames=4, num_steps=6),
        ode_init=ODEInitConfig(steps=30, batch_size=4, lr=1e-3, save_every=15, log_every=5),
        dmd=DMDConfig(steps=4, batch_size=2, clip_latent_frames=4, score_frames=4, window_frames=3, rollout_latent_frames=6, max_context_frames=2,
                      ttur=2, lr_generator=1e-3, lr_fake=1e-3, data_weight=1.0, context_noise_max=0.2, save_every=2, log_every=1),
    )


def default() -> PipelineConfig:
    """The shipped cartpole checkpoint, sized for about 2 hours on one core of this 2-core CPU (the
    second core stays free: two busy torch threads slow ~10x as soon as anything else runs).
    Stage times measured on that core are in docs/RESULTS.md ("Training").

    Compute goes where it buys fidelity: most of it to the teacher (it is all the dynamics the
    student can learn) and to self-forcing DMD, which trains the student on its own 24-chunk
    rollouts through the env's 16-chunk sliding-window cache (evictions included), with a
    regression onto the real future (`dmd.data_weight`) and context-noise augmentation."""
    return PipelineConfig(
        preset="default", dit_size="S",
        collect=CollectSettings(episodes=200, workers=2, max_frames=1000),
        vae=VAETrainConfig(steps=900, batch_size=16, clip_frames=8, save_every=100),
        vae_decoder=DecoderFinetuneConfig(steps=800),  # large pole angles: ~30 min on one core
        heads=HeadsTrainConfig(steps=1200),
        teacher=TeacherTrainConfig(steps=2000, batch_size=16, clip_latent_frames=8, lr=4e-4, warmup_steps=200,
                                   context_noise_max=0.2, save_every=100, snapshot_every=500, pair_fraction=0.5, branch_fraction=0.125),
        causal_teacher_steps=1000,  # ~ the bidirectional teacher's wall-clock (2.9 s vs 1.3 s per step)
        ode_pairs=ODEPairsConfig(num_pairs=256, batch_size=16, clip_latent_frames=8, num_steps=20, max_context_frames=4),
        ode_init=ODEInitConfig(steps=400, batch_size=8, lr=1e-4, context_noise_max=0.2, save_every=50),
        dmd=DMDConfig(steps=100, batch_size=8, clip_latent_frames=8, score_frames=8, window_frames=16, rollout_latent_frames=24,
                      ttur=2, lr_generator=1e-4, lr_fake=1e-4, data_weight=1.0, context_noise_max=0.2, save_every=10,
                      snapshot_every=100),
    )


def gpu() -> PipelineConfig:
    """The default recipe scaled for one H100 (about 12-15 minutes), for a lent GPU:
    `python -m distill.pipeline --world cartpole --out runs/gpu --preset gpu --device cuda`.

    NOT yet timed as a whole: sized from the H100 step times in shared/CALIBRATION.md (DiT "S" step
    at batch 64: 21 ms fp32, teacher 6,000 steps in 5.6 min, ODE init 1,500 steps in 50 s, a DMD
    generator step ~0.35 s with teacher forcing; self-forcing rollouts are launch-bound, ~0.6 s
    estimated). Expected: collect ~2 min on CPU workers, VAE ~2 min, teacher ~4.5 min, ODE pairs
    ~1 min, ODE init ~1 min, DMD ~4 min. Measured on one H200 (2026-12-04, examples/train_on_gpu.sh, fp32 with
    TF32 matmuls): teacher 49 ms per step at batch 64 with 8-frame clips, ODE init 37 ms at batch 32, self-forcing
    DMD ~1 s per step at batch 32 (launch-bound), 1,024 ODE pairs in 4 s; so 6,000 teacher steps of 16-frame clips
    take ~6-8 min and 400 DMD steps ~7 min: about 17 min in all, not yet run end to end."""
    cfg = default()
    cfg.preset = "gpu"
    cfg.collect = CollectSettings(episodes=400, workers=8, max_frames=1000)
    cfg.vae = dataclasses.replace(cfg.vae, steps=3000, batch_size=32)
    cfg.teacher = dataclasses.replace(cfg.teacher, steps=6000, batch_size=64, clip_latent_frames=16, lr=4e-4, warmup_steps=300, save_every=500)
    cfg.causal_teacher_steps = 6000
    cfg.ode_pairs = dataclasses.replace(cfg.ode_pairs, num_pairs=1024, batch_size=64, clip_latent_frames=16, num_steps=24)
    cfg.ode_init = dataclasses.replace(cfg.ode_init, steps=1500, batch_size=32, save_every=250)
    cfg.dmd = dataclasses.replace(cfg.dmd, steps=400, batch_size=32, score_frames=16, rollout_latent_frames=32, save_every=50,
                                  snapshot_every=200)
    return cfg


PRESETS = {"tiny": tiny, "default": default, "gpu": gpu}


def get_preset(name: str) -> PipelineConfig:
    if name not in PRESETS:
        raise ValueError(f"--preset: unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


def to_dict(cfg: PipelineConfig) -> dict:
    return dataclasses.asdict(cfg)


def _parse_value(text: str, current, where: str):
    """Parse `text` to the type of the value it replaces (bool, int, float, str, tuple, None)."""
    import ast

    if isinstance(current, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--set {where}: expected true/false, got {text!r}")
    if isinstance(current, (int, float)) or current is None or isinstance(current, tuple):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            if current is None:
                return text
            raise ValueError(f"--set {where}: cannot parse {text!r} as {type(current).__name__}") from None
        if isinstance(current, float) and isinstance(value, int):
            value = float(value)
        if current is not None and not isinstance(value, type(current)):
            raise ValueError(f"--set {where}: expected {type(current).__name__}, got {text!r}")
        return value
    return text


def apply_overrides(cfg: PipelineConfig, overrides: list[str]) -> PipelineConfig:
    """Apply `section.key=value` overrides (e.g. `teacher.steps=8000`, `dmd.rollout=teacher_forcing`)
    in place; unknown keys, unparsable values and values a section's own checks refuse raise a ValueError naming
    the override."""
    touched: dict[int, tuple] = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, for example teacher.steps=8000")
        key, text = item.split("=", 1)
        *path, name = key.strip().split(".")
        obj = cfg
        for part in path:
            if not dataclasses.is_dataclass(obj) or not hasattr(obj, part):
                raise ValueError(f"--set {key}: no section {part!r}; sections are {[f.name for f in dataclasses.fields(cfg)]}")
            obj = getattr(obj, part)
        if not dataclasses.is_dataclass(obj) or name not in {f.name for f in dataclasses.fields(obj)}:
            valid = sorted(f.name for f in dataclasses.fields(obj)) if dataclasses.is_dataclass(obj) else []
            raise ValueError(f"--set {key}: unknown key {name!r}; valid keys here are {valid}")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            raise ValueError(f"--set {key}: is a section; set one of its keys, e.g. {key}.{dataclasses.fields(current)[0].name}=...")
        setattr(obj, name, _parse_value(text, current, key))
        touched.setdefault(id(obj), (obj, []))[1].append(item)
    for obj, items in touched.values():  # a section's own checks see the values set, all of them, before any stage runs
        check = getattr(obj, "__post_init__", None)
        if check is not None:
            try:
                check()
            except ValueError as e:
                raise ValueError(f"--set {' '.join(items)}: {e}") from None
    return cfg
