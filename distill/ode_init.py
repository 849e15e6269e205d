"""ODE initialisation: the causal student (teacher's weights, block-causal with a clean-context
copy) regressed onto the teacher's clean ODE results from inputs whose chunks sit at independently
chosen student timesteps. A stabiliser before DMD (METHOD.md, point 4)."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from distill.batches import PromptBank, draw_context_noise
from distill.training_utils import StageRunner
from models.dit import DiT
from models.masks import teacher_forcing_mask
from models.samplers import Cond
from models.schedule import FlowSchedule


@dataclass
class ODEInitConfig:
    steps: int = 600
    batch_size: int = 16
    lr: float = 1e-4
    grad_clip: float = 1.0
    context_noise_max: float = 0.0  # context-noise augmentation of the clean copy (the cache) ...
    p_context_noise: float = 0.5  # ... in this fraction of batches, level uniform in [0, max]
    seed: int = 0
    save_every: int = 100
    max_seconds: float = 0.0  # wall-clock budget of the stage (0: none): it ends, saved and done, at the step reached
    log_every: int = 10


def pair_batch(shards: list[dict], B: int, rng: np.random.Generator):
    """B pairs from one random shard (pairs in a shard share the context length)."""
    s = shards[rng.integers(len(shards))]
    idx = torch.from_numpy(rng.choice(s["x0"].shape[0], size=min(B, s["x0"].shape[0]), replace=False))
    return {k: (v[idx] if torch.is_tensor(v) and v.ndim > 0 and k != "states" else v) for k, v in s.items()} | {"states": s["states"][:, idx]}


def student_inputs(pairs: dict, schedule: FlowSchedule, chunk: int, rng: np.random.Generator):
    """Per chunk an independent student level: -> x_in (B, C, T, h, w), t (B, T), loss mask (B, T)."""
    real, states, k = pairs["real"], pairs["states"], pairs["context_frames"]
    S, B, C, Tg = states.shape[:4]
    T = real.shape[2]
    ts = schedule.student_timesteps()
    n_chunks = -(-T // chunk)
    s_idx = torch.from_numpy(rng.integers(0, S, size=(B, n_chunks))).repeat_interleave(chunk, 1)[:, :T]  # (B, T)
    gen_idx = s_idx[:, k:]  # (B, Tg)
    onehot = torch.nn.functional.one_hot(gen_idx, S).permute(2, 0, 1).float()  # (S, B, Tg)
    x_gen = (states * onehot[:, :, None, :, None, None]).sum(0)  # (B, C, Tg, h, w): state at each frame's level
    x_in = torch.cat([real[:, :, :k], x_gen], dim=2)
    t = ts[s_idx]
    t[:, :k] = 0.0
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[:, k:] = True
    return x_in, t, mask


def student_cond(model: DiT, bank: PromptBank, pairs: dict) -> Cond:
    prompts = [bank.prompts[int(i)] for i in pairs["prompt_index"]]
    tok, m, null = bank.batch(prompts)
    dev = next(model.parameters()).device
    return Cond(pairs["action_feats"].to(dev), pairs["action_null"].to(dev), model.encode_text(tok.to(dev), m.to(dev), null.to(dev)))


def train_ode_init(teacher: DiT, shards: list[dict], bank: PromptBank, schedule: FlowSchedule, cfg: ODEInitConfig, stage_dir, accelerator=None,
                   init_from: DiT | None = None) -> dict:
    """Regress a copy of the teacher (or of `init_from`, a warm start such as the shipped student) onto
    the ODE pairs (CausVid's student initialisation). Resumable."""
    runner = StageRunner(stage_dir, "ode init", cfg, accelerator)
    if runner.done:
        return {}
    student = copy.deepcopy(teacher if init_from is None else init_from).train()
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    runner.resume({"model": student}, {"opt": opt})
    model, opt = runner.prepare(student, opt)
    raw = runner.unwrap(model)
    chunk = raw.config.latent_frames_per_chunk

    def train_step(step: int, rng: np.random.Generator):
        pairs = pair_batch(shards, cfg.batch_size, rng)
        x_in, t, mask = student_inputs(pairs, schedule, chunk, rng)
        T = x_in.shape[2]
        x_clean = torch.cat([pairs["real"][:, :, :pairs["context_frames"]], pairs["x0"]], dim=2)
        level = draw_context_noise(rng, cfg.context_noise_max, cfg.p_context_noise)
        t_clean = torch.full(t.shape, level)
        ctx_in = schedule.add_noise(x_clean, torch.randn_like(x_clean), t_clean) if level > 0 else x_clean
        dev = runner.device
        x_in, t, mask, x_clean, ctx_in, t_clean = (a.to(dev) for a in (x_in, t, mask, x_clean, ctx_in, t_clean))
        cond = student_cond(raw, bank, pairs)
        v = model(x_in, t, cond.action_feats, cond.action_null, cond.text, frame_mask=teacher_forcing_mask(T, chunk, device=dev),
                  x_clean=ctx_in, t_clean=t_clean)
        x0_pred = schedule.x0_from_v(x_in, v, t)
        err = (x0_pred - x_clean).pow(2).mean(dim=(1, 3, 4))
        loss = (err * mask).sum() / mask.sum()
        opt.zero_grad(set_to_none=True)
        runner.backward(loss)
        runner.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        return {"losses/ode_init": loss.item()}, {"loss": f"{loss.item():.4f}"}

    steps = runner.run(train_step)
    return runner.finish({"steps": steps}, lambda: raw.save_pretrained(runner.stage_dir / "model"))
