"""The world-model checkpoint the env loads: a directory of components, each `config.json` +
`model.safetensors`, plus `checkpoint.json` naming the world and the sampling schedule.

    checkpoint/
      checkpoint.json   {"format": "causvid-env/1", "world": "cartpole", "schedule": {...}, ...}
      student/          the causal few-step DiT (with its text projection and null prompt)
      vae/              the causal 3D VAE
      heads/            reward and termination heads
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from models.config_utils import config_from_dict
from models.dit import DiT
from models.heads import RewardTerminationHead
from models.io import atomic_write_dir, read_json, resolve_device
from models.schedule import FlowSchedule, ScheduleConfig
from models.vae import CausalVAE

FORMAT = "causvid-env/1"
COMPONENTS = ("student", "vae", "heads")


@dataclass
class WorldModel:
    student: DiT
    vae: CausalVAE
    heads: RewardTerminationHead
    schedule: FlowSchedule
    world: str
    info: dict

    def to(self, device) -> "WorldModel":
        for m in (self.student, self.vae, self.heads):
            m.to(device)
        return self


def default_checkpoint_dir(world: str = "cartpole") -> Path:
    return Path(__file__).resolve().parent / "checkpoints" / world


def _write_world_model(tmp: Path, student: DiT, vae: CausalVAE, heads: RewardTerminationHead, schedule: FlowSchedule,
                       world: str, info: dict | None, storage_dtype: torch.dtype | None) -> None:
    student.save_pretrained(tmp / "student", storage_dtype=storage_dtype)
    vae.save_pretrained(tmp / "vae", storage_dtype=storage_dtype)
    heads.save_pretrained(tmp / "heads", storage_dtype=storage_dtype)
    meta = {"format": FORMAT, "world": world, "schedule": schedule.cfg.__dict__ | {"student_steps": list(schedule.cfg.student_steps)},
            **(info or {})}
    (tmp / "checkpoint.json").write_text(json.dumps(meta, indent=2))


def save_world_model(directory, student: DiT, vae: CausalVAE, heads: RewardTerminationHead, schedule: FlowSchedule,
                     world: str, info: dict | None = None, storage_dtype: torch.dtype | None = None) -> Path:
    return atomic_write_dir(directory, lambda tmp: _write_world_model(tmp, student, vae, heads, schedule, world, info, storage_dtype))


def ship_checkpoint(source: str | os.PathLike, world: str | None = None, storage_dtype: torch.dtype = torch.float16,
                    keep: tuple[str, ...] = ("policy", "probe"), info: dict | None = None) -> Path:
    """Copy a trained checkpoint into the package (fp16 storage) so `CausVidEnv()` finds it: its
    student, VAE, heads and, when the source has one, its `teacher/`. The package's own `keep`
    folders (the shipped policy and probe: trained against the world, not part of it) stay as they
    are; `info` is added to checkpoint.json (e.g. a version and the recipe)."""
    wm = load_world_model(source, world=world)
    target = default_checkpoint_dir(wm.world)
    meta = {k: v for k, v in wm.info.items() if k not in ("format", "world", "schedule")} | {"shipped_from": str(source)} | (info or {})
    teacher = Path(source) / "teacher"

    def write(tmp: Path):
        _write_world_model(tmp, wm.student, wm.vae, wm.heads, wm.schedule, wm.world, meta, storage_dtype)
        if (teacher / "config.json").is_file():
            DiT.from_pretrained(teacher).save_pretrained(tmp / "teacher", storage_dtype=storage_dtype)
        for name in keep:
            if (target / name).is_dir():
                shutil.copytree(target / name, tmp / name)
    return atomic_write_dir(target, write)


def check_checkpoint_dir(directory: Path) -> None:
    """Raise an error that says what to pass when `directory` is not a checkpoint directory: a
    missing path, a file (checkpoint.json, a component's weights), or a training run directory
    (`runs/x` instead of `runs/x/checkpoint`)."""
    what = "pass the checkpoint directory written by `python -m distill.pipeline` (it holds checkpoint.json, student/, vae/, heads/)"
    if directory.is_file():
        home = next((d for d in (directory.parent, directory.parent.parent) if (d / "checkpoint.json").is_file()), None)
        hint = f"pass its directory instead: checkpoint={str(home)!r}" if home is not None else what
        raise ValueError(f"checkpoint: {str(directory)!r} is a file, not a directory; {hint}")
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint: directory {str(directory)!r} does not exist; {what}")
    if (directory / "checkpoint.json").is_file():
        return
    if (directory / "checkpoint" / "checkpoint.json").is_file():
        raise FileNotFoundError(f"checkpoint: {str(directory)!r} looks like a training run directory; pass its "
                                f"checkpoint subdirectory: checkpoint={str(directory / 'checkpoint')!r}")
    if any((d / "DONE").is_file() or (d / "state.pt").is_file() for d in directory.iterdir() if d.is_dir()):
        raise FileNotFoundError(f"checkpoint: {str(directory)!r} looks like a training run directory whose checkpoint "
                                f"stage has not finished (no {directory / 'checkpoint' / 'checkpoint.json'}); finish the "
                                f"pipeline, then pass checkpoint={str(directory / 'checkpoint')!r}")
    raise FileNotFoundError(f"checkpoint: {directory / 'checkpoint.json'} is missing, so {str(directory)!r} is not a "
                            f"world-model checkpoint; {what}")


def load_world_model(directory: str | os.PathLike, device="cpu", world: str | None = None) -> WorldModel:
    """Load a checkpoint directory; errors say which file is missing or which part disagrees."""
    directory = Path(directory)
    check_checkpoint_dir(directory)
    meta_path = directory / "checkpoint.json"
    meta = read_json(meta_path, "checkpoint: ")
    if meta.get("format") != FORMAT:
        raise ValueError(f"checkpoint: {meta_path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    if world is not None and meta.get("world") != world:
        raise ValueError(f"checkpoint: {directory} was trained for world {meta.get('world')!r}, not {world!r}; "
                         "pass a checkpoint of this world or world=" + repr(meta.get("world")))
    for c in COMPONENTS:
        if not (directory / c).is_dir():
            raise FileNotFoundError(f"checkpoint: component {c}/ is missing from {directory}")
    student = DiT.from_pretrained(directory / "student").eval()
    vae = CausalVAE.from_pretrained(directory / "vae").eval()
    heads = RewardTerminationHead.from_pretrained(directory / "heads").eval()
    sc = meta.get("schedule", {})
    sc["student_steps"] = tuple(sc.get("student_steps", ScheduleConfig().student_steps))
    schedule = FlowSchedule(config_from_dict(ScheduleConfig, sc, where=f"{meta_path}:schedule"))
    s, v = student.config, vae.config
    if (s.latent_channels, s.latent_height, s.latent_width) != (v.latent_channels, v.latent_height, v.latent_width):
        raise ValueError(f"checkpoint: student expects latents {(s.latent_channels, s.latent_height, s.latent_width)} but the VAE "
                         f"makes {(v.latent_channels, v.latent_height, v.latent_width)}; components come from different runs")
    if s.frames_per_latent != v.temporal_down or heads.config.frames_per_latent != v.temporal_down:
        raise ValueError("checkpoint: frames_per_latent of student/heads does not match the VAE's temporal_down")
    for m in (student, vae, heads):
        m.requires_grad_(False)
    return WorldModel(student, vae, heads, schedule, meta.get("world"), meta).to(resolve_device(device))
