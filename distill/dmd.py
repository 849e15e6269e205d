"""Asymmetric distribution matching distillation (METHOD.md, point 5).

Three networks: the causal student G; the frozen teacher as the "real" score (with CFG); a "fake"
score initialised from the teacher and trained with the ordinary diffusion loss on G's outputs,
`ttur` updates per generator update. Generator gradient: (x0_fake - x0_real_cfg), normalised
by mean |x - x0_real_cfg|; loss = 0.5 * MSE(x, (x - grad).detach()).

How G produces the clip it is judged on (`rollout`):
- "self_forcing" (the default; Self-Forcing, Huang et al. 2025): G generates `rollout_latent_frames`
  chunk after chunk with its own sliding-window KV cache exactly as the env runs it (same window,
  same eviction, same positions, same context-noise level for the cache-writing pass). Each chunk
  exits at a random student step; that one step carries the gradient, every other step and the
  cache are detached, so memory stays bounded by one chunk's activations per chunk. The teacher
  then judges a random window of `score_frames` of that rollout (its first frame as context).
- "teacher_forcing" (CausVid): every chunk is denoised against the *real* earlier chunks as clean
  context, all chunks in parallel; each chunk exits at a random student step.

`data_weight` > 0 adds a regression of the generated latents onto the real ones (the data has the
true future under the same actions, and CartPole is deterministic); 0 is pure DMD. `data_horizon`
> 0 limits it to that many latent frames after the real context: from one still frame the
velocities are unseen, and a regression over a far future teaches their mean, a damped pole.

`state_weight` > 0 adds an auxiliary action-effect loss on the same rollouts: the frozen state head
(trained on real latents) reads the generated frames' simulator state, compared with the real states
of the clip whose actions drove the rollout, on the position dimensions `state_dims` (cart x and pole
angle: what one frame shows; velocities are read poorly off a single frame), over the first
`state_horizon` generated latent frames (0: all; the near future is what the context and the actions
determine, a far one regresses to the mean of what the unseen velocities allow). The latent regression
weighs the pole by its few pixels; this weighs it by the angle it shows.

`p_random_actions` > 0 (self-forcing only): that share of the rollouts replaces the actions of its
generated chunks by a random script that knows nothing of the state (`random_chunk_actions`: the
previous chunk's action kept with probability `random_action_keep`, else a fresh draw), so the
student is judged by the teacher on the chunk-to-chunk action changes an agent makes, not only on
the data's controllers. Those rollouts have no real future: the data regression skips them.

`p_controller_actions` > 0 (self-forcing only; needs the state head): that share of the rollouts is
driven after its context by a balancing controller that reads the frozen state head off the last
latent frame before each chunk, generated or real (`distill.latent_controller`), with a random push
in `controller_epsilon` of its decisions: the closed loop in which an agent meets the dream, where the
data's actions (chosen from the real state) no longer answer the generated pole. No real future
either: the data regression skips them.

`physics_weight` > 0 (self-forcing only; CartPole) adds the simulator as a critic of every generated
chunk (`distill.physics_consistency`): the rollout is decoded by the VAE, the frozen probe reads cart
and pole off each frame, and each chunk's readings are pulled toward the real physics stepped through
its actions from the state fitted to the frames before it. No real future is needed: it judges the
random scripts' and the controller's rollouts too. `dmd_weight` = 0 turns distribution matching off
(no fake score is trained and the teacher is not queried), for fine-tunes by the other losses alone.

`ode_weight` / `ode_contrast_weight` > 0 (self-forcing only) keep the ODE initialisation's losses on
as an anchor: each step the student regresses a batch of the teacher's ODE pairs (block-causal, as in
`distill.ode_init`), and on contrast shards (one context, two action scripts, the same noise) the
difference between its two predictions onto the teacher's: the action's effect as the teacher draws
it, which DMD's gradient alone was measured to erode.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from distill.batches import PromptBank, draw_context_noise, make_batch, with_random_actions
from distill.latent_controller import LatentBalancer
from distill.ode_init import contrast_shards, ode_pair_losses, pair_batch
from distill.physics_consistency import physics_consistency_loss, physics_for_world, physics_targets, probe_readings
from distill.train_teacher import state_readout_loss
from distill.training_utils import StageRunner, update_ema
from models.actions import ActionCodec
from models.dit import DiT
from models.heads import StateHead
from models.masks import teacher_forcing_mask
from models.samplers import Cond, guided_velocity, student_sample_chunk, write_context
from models.schedule import FlowSchedule


@dataclass
class DMDConfig:
    steps: int = 300  # generator updates
    batch_size: int = 8
    clip_latent_frames: int = 8  # teacher forcing: frames per clip (= what the teacher judges)
    context_frames: int = 1  # teacher forcing: real context frames
    p_no_context: float = 0.15
    lr_generator: float = 2e-5
    lr_fake: float = 2e-5
    ttur: int = 5
    guidance_text: float = 1.5
    guidance_action: float = 2.0
    t_min: float = 0.02
    t_max: float = 0.98
    grad_clip: float = 10.0
    rollout: str = "self_forcing"  # or "teacher_forcing"
    # self-forcing rollouts ------------------------------------------------------------------
    window_frames: int = 16  # the KV-cache window of the rollout (= the env's default window)
    rollout_latent_frames: int = 24  # real context + generated frames per rollout (> window: eviction is trained)
    score_frames: int = 8  # the window of the rollout the teacher judges (<= its training clip length)
    score_from_context: bool = False  # True: that window always starts inside the real context, so the teacher never
    # reads a generated frame as clean context (which asks the next chunk to make up for the last one's miss)
    max_context_frames: int = 4  # real context frames when a rollout starts mid-episode
    p_from_start: float = 0.5  # rollouts from an episode's still first chunk (an image reset)
    # shared ---------------------------------------------------------------------------------
    context_noise_max: float = 0.0  # context-noise augmentation: cache written at a level in [0, max]
    p_context_noise: float = 0.5
    data_weight: float = 0.0  # regression onto the real future latents (0 = pure DMD)
    data_horizon: int = 0  # latent frames after the real context it covers (0: the whole rollout)
    state_weight: float = 0.0  # auxiliary action-effect loss: the frozen state head on the rollout vs the real states
    state_dims: tuple = (0, 2)  # the state dimensions it compares (CartPole: cart x, pole angle)
    state_horizon: int = 0  # latent frames after the real context it covers (0: the whole rollout)
    pair_weight: float = 0.0  # action-effect loss on branch pairs (left / right from one real state), via the state head
    pair_count: int = 4  # pairs per step (and process)
    pair_frames: int = 3  # generated latent frames per pair rollout (<= the branches' chunks)
    p_random_actions: float = 0.0  # self-forcing: share of rollouts driven by a random script after the context
    random_action_keep: float = 0.5  # that script keeps the previous chunk's action with this probability
    p_controller_actions: float = 0.0  # self-forcing: share of rollouts driven, after the context, by a balancing controller
    # that reads the state head off the student's own last frame (`distill.latent_controller`): the loop an agent closes
    controller_epsilon: float = 0.2  # that controller's share of random pushes
    ode_weight: float = 0.0  # self-forcing: an anchor on the ODE pairs, the ODE initialisation's regression (`ode_pair_losses`) ...
    ode_contrast_weight: float = 0.0  # ... and its contrast loss on contrast shards (the teacher's action effect), each step
    ode_batch_size: int = 8  # pairs per step (and process) of that anchor
    ode_contrast_chunks: int = 1  # generated chunks the contrast loss covers (0: all)
    physics_weight: float = 0.0  # self-forcing: the simulator's judgement of each generated chunk (`distill.physics_consistency`):
    # the probe's reading of the decoded chunk against the real physics stepped from the state fitted to the frames before it
    physics_fit_frames: int = 8  # probed frames that state is fitted to
    physics_max_angle_deg: float = 45.0  # chunks that start with the pole past this angle are not judged (a fallen pole)
    physics_rows: int = 0  # rollouts per step (and process) it decodes and judges, the first ones (0: all); decoding costs
    physics_probe: str = ""  # the frozen state probe it reads (a directory; "" = the shipped checkpoint's probe of the world)
    dmd_weight: float = 1.0  # 0: no distribution matching (no fake score, no teacher scores): the other losses alone
    seed: int = 0
    cache_grad: bool = False  # self-forcing: the gradient also flows through the cache into the chunks a chunk read, so a
    # loss on a later chunk can correct the earlier one instead of teaching the later one to make up for it
    ema_decay: float = 0.0  # > 0: keep an EMA of the generator (Self-Forcing uses 0.99); it is what model/ and model_stepN/ hold
    snapshot_every: int = 0  # also keep the generator's weights every N steps (model_stepN/), for equal-budget ablations
    save_every: int = 25
    max_seconds: float = 0.0  # wall-clock budget of the stage (0: none): it ends, saved and done, at the step reached
    log_every: int = 5


ROLLOUTS = ("self_forcing", "teacher_forcing")


def self_forcing_rollout(G: DiT, real: torch.Tensor, k: int, cond: Cond, timesteps: torch.Tensor, window_frames: int,
                         context_noise: float, rng: np.random.Generator, paired: bool = False,
                         cache_grad: bool = False, actions_hook=None) -> torch.Tensor:
    """Generate frames k.. of a clip (B, C, T, h, w) after writing its first k real frames to a
    fresh sliding-window cache, chunk by chunk as the env does. -> (B, C, T, h, w): the real
    context followed by the generated frames, which carry the gradient of their exit step.
    `paired`: rows i and i + B/2 draw the same noise (a left/right pair differs only in its actions).
    `cache_grad`: each chunk's exit step reads the generated chunks before it through the cache
    with their gradient, so a loss on a chunk reaches the chunks it followed (`student_sample_chunk`).
    `actions_hook(c0, c1, last)` -> (action_feats, action_null) of latent frames [c0, c1), given the
    latent frame before them (`distill.latent_controller.LatentBalancer.hook`): actions chosen from
    what was generated, in place of `cond`'s."""
    B, C, T, h, w = real.shape
    chunk, F_ = G.config.latent_frames_per_chunk, G.config.frames_per_latent
    cache = G.new_cache(B, window_frames=window_frames, device=real.device)
    write_context(G, cache, real[:, :, :k], cond.frames(0, k, F_), context_noise)
    outs = [real[:, :, :k]]
    for c0 in range(k, T, chunk):
        c1 = min(T, c0 + chunk)
        exit_step = int(rng.integers(0, len(timesteps)))
        if paired:
            half = torch.randn(B // 2, C, c1 - c0, h, w, device=real.device)
            noise = torch.cat([half, half])
        else:
            noise = torch.randn(B, C, c1 - c0, h, w, device=real.device)
        chunk_cond = cond.frames(c0, c1, F_)
        if actions_hook is not None:
            chunk_cond = Cond(*actions_hook(c0, c1, outs[-1][:, :, -1:]), cond.text, cond.null_text)
        x0, _ = student_sample_chunk(G, cache, noise, chunk_cond,
                                     timesteps, exit_step=exit_step, context_noise=context_noise, grad_at_exit=True,
                                     cache_grad=cache_grad)
        outs.append(x0)
    return torch.cat(outs, dim=2)


class TeacherForcingGenerator:
    """CausVid's generator pass: every chunk of a real clip denoised in parallel against the real
    earlier chunks (the clean copy, at the context-noise level `t_clean`), each exiting at a random
    student step; the exit step carries the gradient."""

    def __init__(self, schedule: FlowSchedule):
        self.schedule = schedule
        self.ts = schedule.student_timesteps()

    def __call__(self, student, raw: DiT, real: torch.Tensor, k: int, cond: Cond, rng: np.random.Generator, context_noise: float = 0.0):
        B, C, T, h, w = real.shape
        chunk = raw.config.latent_frames_per_chunk
        S = len(self.ts)
        n_chunks = -(-T // chunk)
        exit_idx = torch.from_numpy(rng.integers(0, S, size=(B, n_chunks))).repeat_interleave(chunk, 1)[:, :T]
        t_exit = self.ts[exit_idx].to(real.device)  # (B, T)
        t_clean = torch.full((B, T), float(context_noise), device=real.device)
        clean = self.schedule.add_noise(real, torch.randn_like(real), t_clean) if context_noise > 0 else real
        mask = teacher_forcing_mask(T, chunk, device=real.device)
        with torch.no_grad():
            x = torch.randn(B, C, T, h, w, device=real.device)
            x_in = x.clone()
            for s in range(S):
                here = (exit_idx == s).to(real.device)[:, None, :, None, None]
                x_in = torch.where(here, x, x_in)
                if s == S - 1 or bool((exit_idx <= s).all()):
                    break
                t = torch.full((B, T), float(self.ts[s]), device=real.device)
                v = raw(x, t, cond.action_feats, cond.action_null, cond.text, frame_mask=mask, x_clean=clean, t_clean=t_clean)
                x0 = self.schedule.x0_from_v(x, v, t)
                tn = float(self.ts[s + 1])
                x = (1 - tn) * x0 + tn * torch.randn_like(x0)
        t_exit = t_exit.clone()
        t_exit[:, :k] = 0.0
        x_in = torch.cat([real[:, :, :k], x_in[:, :, k:]], dim=2)
        v = student(x_in, t_exit, cond.action_feats, cond.action_null, cond.text, frame_mask=mask, x_clean=clean, t_clean=t_clean)
        x0 = self.schedule.x0_from_v(x_in, v, t_exit)
        return torch.cat([real[:, :, :k], x0[:, :, k:]], dim=2)


def _score(net: DiT, x, t, cond: Cond, causal: bool, guidance, clean) -> torch.Tensor:
    if causal:
        chunk = net.config.latent_frames_per_chunk
        return guided_velocity(net, x, t, cond, *guidance, frame_mask=teacher_forcing_mask(x.shape[2], chunk), x_clean=clean)
    return guided_velocity(net, x, t, cond, *guidance)


def pair_state_loss(state_head: StateHead, generated: torch.Tensor, states: torch.Tensor, dims: tuple | None = None) -> torch.Tensor:
    """The action-effect loss on left/right pairs: `generated` (2P, C, n, h, w) latents whose rows i and
    i + P share their context and noise and differ in their actions; `states` (2P, n*F, S) the real
    states of the same frames. Mean squared error (in the state head's standard units, over `dims`)
    of the difference the frozen head reads between the members against the real difference: what the
    action did, free of what the state alone predicts (in the controllers' data the action follows
    from the state)."""
    P = generated.shape[0] // 2
    if generated.shape[0] != 2 * P or P == 0:
        raise ValueError(f"generated: expected an even number (2P > 0) of rows, left then right, got {generated.shape[0]}")
    read, real = state_head(generated), state_head.standardise(states)
    err = ((read[:P] - read[P:]) - (real[:P] - real[P:])).pow(2)
    return (err[..., list(dims)] if dims is not None else err).mean()


def _horizon_end(k: int, horizon: int, T: int) -> int:
    """The end (exclusive) of the latent frames a regression covers after `k` context frames: `horizon`
    of them, or all `T` when horizon is 0."""
    return k + horizon if horizon > 0 else T


def data_regression_loss(generated: torch.Tensor, real: torch.Tensor, k: int, horizon: int, real_future: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the generated latents (B, C, T, h, w) against the real ones over the
    latent frames after the `k` context frames (within `horizon` of them; 0: to the end), averaged
    over the rollouts driven by the clip's real actions (`real_future` (B,) bool); 0 when none is."""
    end = _horizon_end(k, horizon, generated.shape[2])
    per_clip = (generated[:, :, k:end] - real[:, :, k:end]).pow(2).mean(dim=(1, 2, 3, 4))
    w = real_future.to(per_clip.device, per_clip.dtype)
    return (per_clip * w).sum() / w.sum().clamp(min=1)


def state_loss_mask(action_null: torch.Tensor, real_future: torch.Tensor, k: int, T: int, horizon: int) -> torch.Tensor:
    """(B, T) latent frames the DMD state loss covers: generated (index >= k, the real context
    excluded), within `horizon` frames of the context (0: to the end), in rollouts driven by the
    clip's real actions (`real_future` (B,)), with their actions kept (`action_null` (B, T*F))."""
    B = action_null.shape[0]
    acted = ~action_null.view(B, T, -1).all(dim=2)
    frame = torch.arange(T, device=action_null.device)
    end = _horizon_end(k, horizon, T)
    return acted & real_future[:, None].to(acted.device) & ((frame >= k) & (frame < end))[None]


def _sync_grads(model: torch.nn.Module, acc) -> None:
    """Average gradients across processes for passes that bypass the DDP wrapper (the cached
    self-forcing rollout calls the raw module chunk by chunk)."""
    if acc.num_processes > 1:
        import torch.distributed as dist
        for p in model.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= acc.num_processes


def train_dmd(student_init: DiT, real_score: DiT, dataset, codec: ActionCodec, bank: PromptBank, schedule: FlowSchedule,
              cfg: DMDConfig, stage_dir, causal_teacher: bool = False, accelerator=None,
              state_head: StateHead | None = None, branches=None, ode_shards: list[dict] | None = None,
              vae=None, probe=None, world: str = "cartpole") -> dict:
    """Asymmetric DMD: the generator (student) and the fake score, two models with their own
    optimisers (TTUR: `cfg.ttur` fake-score steps per generator step). `state_head`: the frozen reader
    of the auxiliary state loss (needed when `cfg.state_weight` or `cfg.pair_weight` > 0); `branches`:
    a `distill.branches.BranchSampler` (needed when `cfg.pair_weight` > 0); `ode_shards`: the ODE pairs
    (`distill.ode_pairs.load_ode_pairs`, needed when `cfg.ode_weight` or `cfg.ode_contrast_weight` > 0); `vae`, `probe`:
    the decoder and the frozen state probe of the physics loss (needed when `cfg.physics_weight` > 0). Resumable."""
    if cfg.rollout not in ROLLOUTS:
        raise ValueError(f"dmd.rollout: expected one of {ROLLOUTS}, got {cfg.rollout!r}")
    if cfg.rollout == "self_forcing" and not (cfg.score_frames <= cfg.rollout_latent_frames):
        raise ValueError(f"dmd.score_frames={cfg.score_frames} must be <= dmd.rollout_latent_frames={cfg.rollout_latent_frames}")
    if cfg.score_from_context and cfg.max_context_frames - 1 + cfg.score_frames > cfg.rollout_latent_frames:
        raise ValueError(f"dmd.score_from_context: a window of dmd.score_frames={cfg.score_frames} starting inside the real context "
                         f"(up to dmd.max_context_frames={cfg.max_context_frames}) must fit in dmd.rollout_latent_frames="
                         f"{cfg.rollout_latent_frames}; lower score_frames or raise rollout_latent_frames")
    if not 0.0 <= cfg.p_random_actions <= 1.0:
        raise ValueError(f"dmd.p_random_actions: expected a probability in [0, 1], got {cfg.p_random_actions}")
    if not 0.0 <= cfg.p_controller_actions <= 1.0 or not 0.0 <= cfg.controller_epsilon <= 1.0:
        raise ValueError(f"dmd.p_controller_actions / dmd.controller_epsilon: expected probabilities in [0, 1], got "
                         f"{cfg.p_controller_actions} / {cfg.controller_epsilon}")
    if cfg.p_random_actions > 0 and cfg.rollout != "self_forcing":
        raise ValueError("dmd.p_random_actions needs dmd.rollout=self_forcing (teacher forcing denoises against the real "
                         "future, which a random script did not make); set it to 0")
    if cfg.cache_grad and cfg.rollout != "self_forcing":
        raise ValueError("dmd.cache_grad needs dmd.rollout=self_forcing (teacher forcing reads a real context); set it to false")
    for name in ("state_weight", "pair_weight", "p_controller_actions"):
        if getattr(cfg, name) > 0 and state_head is None:
            raise ValueError(f"dmd.{name} > 0 needs a trained state head (the pipeline's state_head stage); set it to 0 "
                             "or train one")
        if getattr(cfg, name) > 0 and cfg.rollout != "self_forcing":
            raise ValueError(f"dmd.{name} > 0 needs dmd.rollout=self_forcing; set it to 0")
    if cfg.pair_weight > 0 and branches is None:
        raise ValueError("dmd.pair_weight > 0 needs branching episodes (branches.points_per_episode > 0); set it to 0")
    if cfg.physics_weight > 0:
        if cfg.rollout != "self_forcing":
            raise ValueError("dmd.physics_weight > 0 needs dmd.rollout=self_forcing; set it to 0")
        if vae is None or probe is None:
            raise ValueError("dmd.physics_weight > 0 needs the VAE and a state probe (dmd.physics_probe); set it to 0 or pass them")
        physics_for_world(world)  # a world without known equations fails here, before any step
        if cfg.physics_rows < 0:
            raise ValueError(f"dmd.physics_rows: expected >= 0 (0: every rollout), got {cfg.physics_rows}")
        if cfg.physics_fit_frames < 2:
            raise ValueError(f"dmd.physics_fit_frames: expected at least 2 frames to fit a state to, got {cfg.physics_fit_frames}")
    if cfg.dmd_weight < 0:
        raise ValueError(f"dmd.dmd_weight: expected >= 0, got {cfg.dmd_weight}")
    ode_on = cfg.ode_weight > 0 or cfg.ode_contrast_weight > 0
    if ode_on and cfg.rollout != "self_forcing":
        raise ValueError("dmd.ode_weight / dmd.ode_contrast_weight > 0 need dmd.rollout=self_forcing; set them to 0")
    if ode_on and not ode_shards:
        raise ValueError("dmd.ode_weight / dmd.ode_contrast_weight > 0 need the ODE pairs (the ode_pairs stage); set them to 0")
    ode_pool = (contrast_shards(ode_shards, True) if cfg.ode_contrast_weight > 0 else ode_shards) if ode_on else []
    if cfg.ode_contrast_weight > 0 and not ode_pool:
        raise ValueError("dmd.ode_contrast_weight > 0: the ODE pairs hold no contrast shards with a real context; generate them with "
                         "ode_pairs.num_contrast_pairs > 0 or set it to 0")
    runner = StageRunner(stage_dir, f"dmd ({cfg.rollout})", cfg, accelerator)
    if runner.done:
        return {}
    dev = runner.device
    G = copy.deepcopy(student_init).train().requires_grad_(True)
    fake = copy.deepcopy(real_score).train().requires_grad_(True)
    real_score = real_score.eval().requires_grad_(False).to(dev)
    opt_g = torch.optim.AdamW(G.parameters(), lr=cfg.lr_generator, betas=(0.0, 0.999))
    opt_f = torch.optim.AdamW(fake.parameters(), lr=cfg.lr_fake, betas=(0.0, 0.999))
    modules = {"generator": G, "fake": fake}
    ema = None
    if cfg.ema_decay > 0:  # the rollouts use the live generator; the EMA is what the stage hands on
        ema = modules["generator_ema"] = copy.deepcopy(G).eval().requires_grad_(False)
    runner.resume(modules, {"opt_g": opt_g, "opt_f": opt_f}, optional=("generator_ema",))
    for opt, lr in ((opt_g, cfg.lr_generator), (opt_f, cfg.lr_fake)):  # a resumed optimiser keeps its moments, not its old rate
        for g in opt.param_groups:
            g["lr"] = lr
    if ema is not None and "generator_ema" in runner.missing_modules:  # a state saved without one: start it here
        ema.load_state_dict(G.state_dict())
    G_w, fake_w, opt_g, opt_f = runner.prepare(G, fake, opt_g, opt_f)
    G_raw, fake_raw = runner.unwrap(G_w), runner.unwrap(fake_w)
    if ema is not None:
        ema.to(dev)
    handed_on = ema if ema is not None else G_raw  # model/ and model_stepN/
    if state_head is not None:
        state_head = state_head.to(dev).eval().requires_grad_(False)
    if cfg.physics_weight > 0:
        vae = vae.to(dev).eval().requires_grad_(False)
        probe = probe.to(dev).eval().requires_grad_(False)
    balancer = LatentBalancer(state_head, codec, epsilon=cfg.controller_epsilon) if cfg.p_controller_actions > 0 else None
    tf_gen = TeacherForcingGenerator(schedule)
    student_ts = schedule.student_timesteps()
    F_ = G_raw.config.frames_per_latent

    def noisy(x, k, rng):
        B, T = x.shape[0], x.shape[2]
        u = torch.from_numpy(rng.uniform(cfg.t_min, cfg.t_max, size=(B, 1))).float()
        t = schedule.shift(u).expand(B, T).clone().to(x.device)
        t[:, :k] = 0.0
        eps = torch.randn_like(x)
        return schedule.add_noise(x, eps, t), t, eps

    def dmd_term(x, kc, wb, rng):
        """The distribution-matching loss on the judged window `x` (its first `kc` frames context) and its gradient."""
        xt, t, _ = noisy(x.detach(), kc, rng)
        with torch.no_grad():
            cond_r = wb.cond(real_score, bank, with_null_text=True)
            cond_f = wb.cond(fake_raw, bank)
            x0_real = schedule.x0_from_v(xt, _score(real_score, xt, t, cond_r, causal_teacher, (cfg.guidance_text, cfg.guidance_action), x.detach()), t)
            x0_fake = schedule.x0_from_v(xt, _score(fake_raw, xt, t, cond_f, causal_teacher, (1.0, 1.0), x.detach()), t)
            xg = x.detach()[:, :, kc:]
            norm = (xg - x0_real[:, :, kc:]).abs().mean(dim=(1, 2, 3, 4), keepdim=True).clamp(min=1e-6)
            grad = torch.nan_to_num((x0_fake - x0_real)[:, :, kc:] / norm)
        return 0.5 * F.mse_loss(x[:, :, kc:], (x[:, :, kc:] - grad).detach()), grad

    def physics_term(full, batch, k):
        """The physics-consistency loss of the rollout `full` (its first `k` latent frames real context)."""
        n = cfg.physics_rows or full.shape[0]
        read = probe_readings(vae, probe, full[:n])  # (n, T*F, 2) [x m, theta rad], with the gradient of the generated frames
        acted = ~batch.action_null[:n].to(read.device)
        push_right = batch.action_feats[:n, :, -1].to(read.device)  # CartPole's Discrete(2): feature 1 is the right push
        targets, mask = physics_targets(read.detach(), push_right, acted, batch.prompts[:n], world, k, F_, cfg.physics_fit_frames,
                                        cfg.physics_max_angle_deg)
        return physics_consistency_loss(read, targets, mask)

    def train_step(step: int, rng: np.random.Generator):
        ctx_noise = draw_context_noise(rng, cfg.context_noise_max, cfg.p_context_noise)
        scripted = np.zeros(cfg.batch_size, bool)  # rollouts whose actions are a script or a controller's (no real future)
        controlled = np.zeros(cfg.batch_size, bool)  # rollouts the latent balancing controller drives
        # -- the generator's sample (gradient-carrying) -------------------------------------------
        if cfg.rollout == "self_forcing":
            from_start = rng.random() < cfg.p_from_start
            k = 1 if from_start else int(rng.integers(1, cfg.max_context_frames + 1))
            batch = make_batch(dataset.sample(cfg.batch_size, cfg.rollout_latent_frames, rng, from_start=from_start), codec, rng).to(dev)
            if cfg.p_random_actions > 0:  # (no draw otherwise: the RNG stream of earlier runs is kept)
                scripted = rng.random(cfg.batch_size) < cfg.p_random_actions
            if scripted.any():
                batch = with_random_actions(batch, scripted, k * F_, codec, F_ * G_raw.config.latent_frames_per_chunk, rng,
                                            cfg.random_action_keep)
            hook, record = None, None
            if balancer is not None:  # (no draw otherwise: the RNG stream of earlier runs is kept)
                controlled = (rng.random(cfg.batch_size) < cfg.p_controller_actions) & ~scripted
                if controlled.any():
                    hook, record = balancer.hook(batch.action_feats, batch.action_null, controlled, F_, rng)
                    scripted = scripted | controlled
            cond_g = batch.cond(G_raw, bank)
            full = self_forcing_rollout(G_raw, batch.latents, k, cond_g, student_ts, cfg.window_frames, ctx_noise, rng,
                                        cache_grad=cfg.cache_grad, actions_hook=hook)
            if record is not None:  # the scores judge the rollout under the actions the controller took
                batch = replace(batch, action_feats=record[0], action_null=record[1])
            n_score = cfg.score_frames
            if cfg.score_from_context:  # the window starts inside the real context: its context is real
                s0 = int(rng.integers(0, k))
            else:
                s0 = int(rng.integers(0, full.shape[2] - n_score + 1))
            kc = max(k - s0, 1)  # the teacher reads the window's first frame(s) as context
        else:
            k = 0 if rng.random() < cfg.p_no_context else cfg.context_frames
            batch = make_batch(dataset.sample(cfg.batch_size, cfg.clip_latent_frames, rng, from_start=(k == 0)), codec, rng).to(dev)
            cond_g = batch.cond(G_raw, bank)
            full = tf_gen(G_w, G_raw, batch.latents, k, cond_g, rng, ctx_noise)
            n_score, s0, kc = full.shape[2], 0, k
        x = full[:, :, s0:s0 + n_score]
        wb = batch.window((s0 * F_, (s0 + n_score) * F_))
        # -- fake score: diffusion loss on the generator's samples (TTUR) ---------------------------
        loss_f = torch.zeros(())
        for _ in range(cfg.ttur if cfg.dmd_weight > 0 else 0):
            cond_f = wb.cond(fake_raw, bank)
            xd = x.detach()
            xt, t, eps = noisy(xd, kc, rng)
            v = _score(fake_w, xt, t, cond_f, causal_teacher, (1.0, 1.0), xd)
            err = (v - schedule.v_target(xd, eps)).pow(2).mean(dim=(1, 3, 4))[:, kc:]
            loss_f = err.mean()
            opt_f.zero_grad(set_to_none=True)
            runner.backward(loss_f)
            runner.clip_grad_norm_(fake_w.parameters(), cfg.grad_clip)
            opt_f.step()
        # -- generator: distribution matching gradient (+ optional regression on the real future) ----
        if cfg.dmd_weight > 0:
            loss_dmd, grad = dmd_term(x, kc, wb, rng)
        else:
            loss_dmd, grad = torch.zeros((), device=x.device), torch.zeros(())
        real_future = torch.from_numpy(~scripted).to(full.device)  # rollouts whose actions made the clip's real future
        loss_data = data_regression_loss(full, batch.latents, k, cfg.data_horizon, real_future)
        loss_g = cfg.dmd_weight * loss_dmd + cfg.data_weight * loss_data if cfg.data_weight > 0 else cfg.dmd_weight * loss_dmd
        loss_phys = torch.zeros(())
        if cfg.physics_weight > 0:
            loss_phys = physics_term(full, batch, k)
            loss_g = loss_g + cfg.physics_weight * loss_phys
        loss_state = torch.zeros(())
        if cfg.state_weight > 0:
            if batch.states is None:
                raise ValueError("dmd.state_weight > 0 needs clips with per-frame 'states' (collected data has them)")
            mask = state_loss_mask(batch.action_null, real_future, k, full.shape[2], cfg.state_horizon)
            loss_state = state_readout_loss(state_head, full, batch.states, mask, dims=cfg.state_dims)
            loss_g = loss_g + cfg.state_weight * loss_state
        loss_pair = torch.zeros(())
        if cfg.pair_weight > 0:
            kp = int(rng.integers(1, cfg.max_context_frames + 1))
            left, right = branches.pairs_at_context(cfg.pair_count, kp, kp + cfg.pair_frames, rng)
            pb = make_batch(left + right, codec, rng).to(dev)
            if pb.states is None:
                raise ValueError("dmd.pair_weight > 0 needs branch clips with per-frame 'states'")
            pair = self_forcing_rollout(G_raw, pb.latents, kp, pb.cond(G_raw, bank), student_ts, cfg.window_frames, ctx_noise, rng,
                                        paired=True, cache_grad=cfg.cache_grad)
            loss_pair = pair_state_loss(state_head, pair[:, :, kp:], pb.states[:, kp * F_:], cfg.state_dims)
            loss_g = loss_g + cfg.pair_weight * loss_pair
        loss_ode, loss_ode_c = torch.zeros(()), torch.zeros(())
        if ode_on:
            pairs = pair_batch(ode_pool, cfg.ode_batch_size, rng)
            loss_ode, c, _ = ode_pair_losses(G_raw, G_raw, bank, schedule, pairs, rng, dev, cfg.context_noise_max, cfg.p_context_noise,
                                          cfg.ode_contrast_chunks)
            loss_g = loss_g + cfg.ode_weight * loss_ode
            if c is not None and cfg.ode_contrast_weight > 0:
                loss_ode_c = c
                loss_g = loss_g + cfg.ode_contrast_weight * c
        opt_g.zero_grad(set_to_none=True)
        runner.backward(loss_g)
        if cfg.rollout == "self_forcing":  # the rollout bypassed the DDP wrapper
            _sync_grads(G_raw, runner.acc)
        gn = runner.clip_grad_norm_(G_w.parameters(), cfg.grad_clip)
        opt_g.step()
        if ema is not None:
            update_ema(ema, G_raw, cfg.ema_decay)
        n = step + 1  # generator steps taken
        if cfg.snapshot_every and n % cfg.snapshot_every == 0 and runner.is_main:
            handed_on.save_pretrained(runner.stage_dir / f"model_step{n}")
            if ema is not None:
                G_raw.save_pretrained(runner.stage_dir / f"raw_step{n}")
        return ({"losses/dmd": loss_dmd.item(), "losses/data": loss_data.item(), "losses/fake_score": loss_f.item(),
                 "losses/state": loss_state.item(), "losses/pair": loss_pair.item(),
                 "losses/ode": loss_ode.item(), "losses/ode_contrast": loss_ode_c.item(), "losses/physics": loss_phys.item(),
                 "charts/generator_grad_norm": gn, "charts/dmd_grad_abs": grad.abs().mean(), "charts/context_noise": ctx_noise,
                 "charts/scripted_rollouts": float(scripted.mean()), "charts/controlled_rollouts": float(controlled.mean())},
                {"dmd": f"{loss_dmd.item():.4f}", "data": f"{loss_data.item():.4f}", "fake": f"{loss_f.item():.4f}",
                 **({"phys": f"{loss_phys.item():.4f}"} if cfg.physics_weight > 0 else {})})

    steps = runner.run(train_step)
    runner.finish({"steps": steps, "rollout": cfg.rollout, "causal_teacher": causal_teacher},
                  lambda: handed_on.save_pretrained(runner.stage_dir / "model"))
    return {"steps": steps}
