"""ODE pairs: the teacher's guided many-step ODE sampler run on real action sequences and prompts,
keeping the states at the student's timesteps and the clean result (safetensors shards)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from distill.batches import PromptBank, contrast_pairs, make_batch
from distill.training_utils import is_done, mark_done
from models.actions import ActionCodec
from models.dit import DiT
from models.samplers import check_temperature, ode_sample
from models.schedule import FlowSchedule


@dataclass
class ODEPairsConfig:
    num_pairs: int = 512
    batch_size: int = 16
    clip_latent_frames: int = 8
    context_frames: int = 1  # real latent frames given as context (an image reset is one) ...
    max_context_frames: int = 0  # ... or, when larger, a per-shard draw in [context_frames, max] (a 16-frame clip reset is 4)
    p_no_context: float = 0.15  # fraction of shards generated from the prompt alone
    num_steps: int = 25
    guidance_text: float = 1.5
    guidance_action: float = 2.0
    seed: int = 0
    num_contrast_pairs: int = 0  # and this many in contrast shards (`contrast_*.safetensors`): each clip twice, with the
    contrast_p_keep: float = 0.5  # ... same noise, a random script and one differing in every chunk (`distill.batches.contrast_pairs`)
    temperature: float = 1.0  # scale of the teacher's starting noise (below 1: pairs nearer its conditional mode; the
    # student then samples at the same temperature, `checkpoint.json` `temperature`)
    p_context_from_start: float = 0.0  # fraction of shards with a context whose clips begin at the episode's still chunk, so
    # that with context_frames=1 the context is what an image reset gives the env (drawn only when > 0: earlier pairs stay)

    def __post_init__(self):
        check_temperature(self.temperature, "ode_pairs.temperature", "the teacher's trained noise")
        if not 0.0 <= self.p_context_from_start <= 1.0:
            raise ValueError(f"ode_pairs.p_context_from_start: a fraction in [0, 1], got {self.p_context_from_start}")


def _pair_tensors(teacher, schedule, student_t, batch, bank, real, noise, k, cfg) -> dict:
    cond = batch.cond(teacher, bank, with_null_text=True)
    x0, rec = ode_sample(teacher, schedule, noise, cond, context=real[:, :, :k] if k else None, num_steps=cfg.num_steps,
                         guidance_text=cfg.guidance_text, guidance_action=cfg.guidance_action, record_at=student_t)
    states = torch.stack([rec[round(float(t), 6)] for t in student_t])  # (S, B, C, T-k, h, w)
    return {
        "real": real.cpu().contiguous(), "states": states.cpu().contiguous(), "x0": x0.cpu().contiguous(),
        "action_feats": batch.action_feats.cpu().contiguous(), "action_null": batch.action_null.cpu().to(torch.uint8),
        "prompt_index": torch.tensor([bank.index[p] for p in batch.prompts]), "context_frames": torch.tensor(k),
    }


def _draw_context(cfg: ODEPairsConfig, rng: np.random.Generator) -> int:
    k = 0 if rng.random() < cfg.p_no_context else cfg.context_frames
    if k and cfg.max_context_frames > cfg.context_frames:
        k = int(rng.integers(cfg.context_frames, cfg.max_context_frames + 1))
    return k


def _from_start(cfg: ODEPairsConfig, k: int, rng: np.random.Generator) -> bool:
    """Whether a shard's clips begin at the episode start: always without context (the prompt alone
    must reproduce the still chunk), else with probability `p_context_from_start`."""
    return k == 0 or (cfg.p_context_from_start > 0 and rng.random() < cfg.p_context_from_start)


def _save(tensors: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(path)


def generate_ode_pairs(teacher: DiT, dataset, codec: ActionCodec, bank: PromptBank, schedule: FlowSchedule,
                       cfg: ODEPairsConfig, stage_dir) -> dict:
    """Shards `pairs_00000.safetensors`, ... each one batch, then `contrast_00000.safetensors`, ...
    (`num_contrast_pairs`); written atomically, skipped on resume (so contrast shards can be added
    to a finished stage by removing its DONE)."""
    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    if is_done(stage_dir):
        return {}
    if cfg.max_context_frames and not cfg.context_frames <= cfg.max_context_frames < cfg.clip_latent_frames:
        raise ValueError(f"ode_pairs.max_context_frames: expected 0 or between ode_pairs.context_frames ({cfg.context_frames}) and "
                         f"ode_pairs.clip_latent_frames - 1 ({cfg.clip_latent_frames - 1}), got {cfg.max_context_frames}")
    n_contrast = -(-cfg.num_contrast_pairs // cfg.batch_size)
    if n_contrast and cfg.batch_size % 2:
        raise ValueError(f"ode_pairs.batch_size: contrast shards hold pairs of rows, so it must be even, got {cfg.batch_size}")
    teacher.eval()
    n_shards = -(-cfg.num_pairs // cfg.batch_size)
    student_t = schedule.student_timesteps()
    dev = next(teacher.parameters()).device
    for i in tqdm(range(n_shards), desc="ode pairs", dynamic_ncols=True):
        path = stage_dir / f"pairs_{i:05d}.safetensors"
        if path.exists():
            continue
        rng = np.random.default_rng([cfg.seed, i])
        torch.manual_seed(cfg.seed * 100003 + i)
        k = _draw_context(cfg, rng)
        clips = dataset.sample(cfg.batch_size, cfg.clip_latent_frames, rng, from_start=_from_start(cfg, k, rng))
        batch = make_batch(clips, codec, rng).to(dev)
        real = batch.latents
        B, C, T, h, w = real.shape
        noise = (torch.randn(B, C, T - k, h, w) * cfg.temperature).to(dev)  # drawn on the CPU: the same pairs on any device
        _save(_pair_tensors(teacher, schedule, student_t, batch, bank, real, noise, k, cfg), path)
    F = teacher.config.frames_per_latent
    for i in tqdm(range(n_contrast), desc="ode contrast pairs", dynamic_ncols=True, disable=not n_contrast):
        path = stage_dir / f"contrast_{i:05d}.safetensors"
        if path.exists():
            continue
        rng = np.random.default_rng([cfg.seed, 1_000_003, i])
        torch.manual_seed(cfg.seed * 100003 + 7_000_001 + i)
        k = _draw_context(cfg, rng)
        clips = dataset.sample(cfg.batch_size // 2, cfg.clip_latent_frames, rng, from_start=_from_start(cfg, k, rng))
        batch = contrast_pairs(make_batch(clips, codec, rng), k * F, codec, F * teacher.config.latent_frames_per_chunk, rng,
                               cfg.contrast_p_keep).to(dev)
        real = batch.latents
        B, C, T, h, w = real.shape
        noise = (torch.randn(B // 2, C, T - k, h, w) * cfg.temperature).repeat(2, 1, 1, 1, 1).to(dev)  # both rows of a pair start from the same noise
        _save(_pair_tensors(teacher, schedule, student_t, batch, bank, real, noise, k, cfg), path)
    mark_done(stage_dir, {"shards": n_shards, "pairs": n_shards * cfg.batch_size, "contrast_shards": n_contrast,
                          "contrast_pairs": n_contrast * cfg.batch_size})
    return {"shards": n_shards, "contrast_shards": n_contrast}


def load_ode_pairs(stage_dir) -> list[dict]:
    """The shards, each a dict of tensors plus `context_frames` (int) and `contrast` (bool: rows i
    and B/2 + i are a contrast pair)."""
    shards = []
    for pattern in ("pairs_*.safetensors", "contrast_*.safetensors"):
        for p in sorted(Path(stage_dir).glob(pattern)):
            d = load_file(str(p))
            d["action_null"] = d["action_null"].bool()
            d["context_frames"] = int(d["context_frames"])
            d["contrast"] = pattern.startswith("contrast")
            shards.append(d)
    if not shards:
        raise FileNotFoundError(f"no ODE pair shards in {stage_dir}; run the ode_pairs stage first")
    return shards
