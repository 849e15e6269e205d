"""The real simulator as a critic of the dream's own chunks: a physics-consistency loss.

A self-forcing rollout is decoded to frames and the frozen state probe (`evaluation.probe`, trained
on real frames) reads the cart position and the pole angle of every frame. For each generated chunk,
the simulator state at the end of the frames before it is fitted to those readings (Gauss-Newton on
the state `fit_frames` frames earlier, stepped through the same actions with the same physics, so
the velocities come from the motion the dream itself drew, not from a regression on one frame), then
stepped through the chunk's actions: where the real system would have taken what the dream showed.
The loss is the squared difference, in the state's standard units, between the probe's reading of
the generated chunk and that target (target detached). It needs no real future, so it applies to
rollouts driven by random scripts and controllers as well as to the data's actions: it is the
judgement on the chunk-to-chunk dynamics an agent meets.

Measured before it was used (`examples/physics_target_check.py`, `docs/results/dream_physics/target_check.json`:
held-out chunks of real latents decoded by the shipped VAE): the target fitted on 8 probed frames is off the
true states by 0.07-0.10 (pole) and 0.02 (cart) standard units over the chunk's 4 frames, the probe's own
reading of the true chunk by 0.07-0.14 / 0.02, repeating the last frame by 0.16-0.39 / 0.03-0.09; a
constant-velocity line through the same frames (no physics) is worse than repeating (0.21-0.49): the pushes
accelerate the cart too much within 0.14 s.

Only CartPole's equations are here (gymnasium's `CartPole-v1`, Euler, with each variant's physics
overrides): `physics_for_world` raises for other worlds.
"""
from __future__ import annotations

import math

import torch

from causvid_env.worlds import get_world

__all__ = ["CARTPOLE_DEFAULTS", "physics_for_world", "cartpole_step", "simulate", "fit_last_state", "physics_units", "probe_readings",
           "physics_targets", "physics_consistency_loss"]

CARTPOLE_DEFAULTS = {"gravity": 9.8, "masscart": 1.0, "masspole": 0.1, "length": 0.5, "force_mag": 10.0, "tau": 0.02}
_PARAMS = ("gravity", "masscart", "masspole", "length", "force_mag")


def physics_for_world(world: str) -> dict[str, dict[str, float]]:
    """prompt -> CartPole physics parameters of the variant with that prompt."""
    spec = get_world(world)
    if spec.name != "cartpole":
        raise ValueError(f"world: the physics-consistency loss knows CartPole's equations only, got {spec.name!r}; "
                         "set dmd.physics_weight to 0 for this world")
    return {v.prompt: {**CARTPOLE_DEFAULTS, **(v.physics or {})} for v in spec.variants}


def _param_tensors(prompts: list, table: dict, device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-row parameter tensors (B,) and the rows whose prompt names a known variant (B,) bool."""
    known = torch.tensor([p in table for p in prompts], dtype=torch.bool, device=device)
    rows = [table.get(p, CARTPOLE_DEFAULTS) for p in prompts]
    return {k: torch.tensor([r[k] for r in rows], dtype=torch.float64, device=device) for k in _PARAMS}, known


def cartpole_step(s: torch.Tensor, push_right: torch.Tensor, P: dict[str, torch.Tensor], tau: float = 0.02) -> torch.Tensor:
    """One Euler step of gymnasium's CartPole. s (..., 4) [x, x_dot, theta, theta_dot]; push_right (...)
    in {0, 1}; P: parameters broadcastable to push_right."""
    x, xd, th, thd = s.unbind(-1)
    f = P["force_mag"] * (2 * push_right - 1)
    total = P["masspole"] + P["masscart"]
    pml = P["masspole"] * P["length"]
    c, si = torch.cos(th), torch.sin(th)
    temp = (f + pml * thd ** 2 * si) / total
    th_acc = (P["gravity"] * si - c * temp) / (P["length"] * (4.0 / 3.0 - P["masspole"] * c ** 2 / total))
    x_acc = temp - pml * th_acc * c / total
    return torch.stack([x + tau * xd, xd + tau * x_acc, th + tau * thd, thd + tau * th_acc], -1)


def simulate(s0: torch.Tensor, push_right: torch.Tensor, P: dict[str, torch.Tensor]) -> torch.Tensor:
    """s0 (N, 4), push_right (N, n) -> the states after each of the n actions (N, n, 4)."""
    out, s = [], s0
    for i in range(push_right.shape[1]):
        s = cartpole_step(s, push_right[:, i], P)
        out.append(s)
    return torch.stack(out, 1)


def fit_last_state(pos: torch.Tensor, push_right: torch.Tensor, P: dict[str, torch.Tensor], iters: int = 3) -> torch.Tensor:
    """pos (N, n, 2) readings [x, theta] of n consecutive frames; push_right (N, n - 1) the actions that
    made frames 1..n-1. Gauss-Newton (finite-difference Jacobian) on the state at frame 0 so that the
    simulated frames match the readings; -> the fitted state at frame n - 1 (N, 4)."""
    N, n, _ = pos.shape
    span = 0.02 * max(n - 1, 1)
    s0 = torch.stack([pos[:, 0, 0], (pos[:, -1, 0] - pos[:, 0, 0]) / span,
                      pos[:, 0, 1], (pos[:, -1, 1] - pos[:, 0, 1]) / span], -1)

    def residual(s):
        traj = torch.cat([s[:, None], simulate(s, push_right, P)], 1)[..., [0, 2]]
        return (traj - pos).reshape(N, -1)

    eps = 1e-4
    for _ in range(iters):
        r = residual(s0)
        J = torch.stack([(residual(s0 + eps * torch.eye(4, dtype=s0.dtype, device=s0.device)[d]) - r) / eps for d in range(4)], -1)
        s0 = s0 + torch.linalg.lstsq(J, -r[..., None]).solution[..., 0]
    return torch.cat([s0[:, None], simulate(s0, push_right, P)], 1)[:, -1]


def physics_targets(readings: torch.Tensor, push_right: torch.Tensor, acted: torch.Tensor, prompts: list, world: str,
                    first: int, frames_per_latent: int, fit_frames: int = 8, max_angle_deg: float = 45.0,
                    max_cart_m: float = 2.4) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the real system takes each latent frame from `first` on, given the frames before it.

    readings (B, T*F, 2) [x in m, theta in rad] (detached); push_right (B, T*F) in {0, 1}; acted (B, T*F)
    bool (False: no action, e.g. an episode's still first chunk). -> targets (B, T*F, 2) and a mask
    (B, T*F) bool of the frames that have one: frames of latent frames >= `first` whose chunk is acted,
    whose row's prompt names a variant, and whose state before the chunk can be fitted: the `fit_frames`
    frames before the chunk acted (after their first), else the previous chunk and the frame before it,
    or, right after a still chunk, the still frame itself with zero velocities (episodes start at rest
    within 0.05). Chunks whose fitted start state has the pole past `max_angle_deg` or the cart past
    `max_cart_m` have none: a fallen pole (CartPole ends its episodes at 12 deg) is not what agents meet."""
    B, TF, _ = readings.shape
    F_ = frames_per_latent
    T = TF // F_
    table = physics_for_world(world)
    P, known = _param_tensors(prompts, table, readings.device)
    r = readings.double()
    targets = torch.zeros_like(r)
    mask = torch.zeros(B, TF, dtype=torch.bool, device=readings.device)
    for j in range(max(first, 1), T):
        c0 = j * F_
        chunk_acted = acted[:, c0:c0 + F_].all(1) & known
        n = min(fit_frames, c0)
        window_acted = acted[:, c0 - n + 1:c0].all(1) if n > 1 else torch.ones(B, dtype=torch.bool, device=acted.device)
        after_still = ~acted[:, c0 - F_:c0].any(1)  # the chunk before is a still chunk
        s_fit = fit_last_state(r[:, c0 - n:c0], push_right[:, c0 - n + 1:c0].double(), P)
        # a shorter window (the previous chunk and the frame before it) where the long one reaches into a still chunk
        m = min(F_ + 1, c0)
        short_acted = acted[:, c0 - m + 1:c0].all(1)
        s_short = fit_last_state(r[:, c0 - m:c0], push_right[:, c0 - m + 1:c0].double(), P)
        last = r[:, c0 - 1]
        s_still = torch.stack([last[:, 0], torch.zeros_like(last[:, 0]), last[:, 1], torch.zeros_like(last[:, 0])], -1)
        s = torch.where(after_still[:, None], s_still, torch.where(window_acted[:, None], s_fit, s_short))
        ok = (chunk_acted & (window_acted | short_acted | after_still) & torch.isfinite(s).all(1)
              & (s[:, 2].abs() < math.radians(max_angle_deg)) & (s[:, 0].abs() < max_cart_m))
        traj = simulate(s, push_right[:, c0:c0 + F_].double(), P)[..., [0, 2]]
        targets[:, c0:c0 + F_] = torch.where(ok[:, None, None], traj, targets[:, c0:c0 + F_])
        mask[:, c0:c0 + F_] = ok[:, None]
    return targets.to(readings.dtype), mask


def physics_consistency_loss(read: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, scale: tuple = (0.81, 0.155),
                             delta: float = 1.0) -> torch.Tensor:
    """Huber loss (quadratic within `delta`, linear beyond: a wild target fitted to a jumpy window does not
    dominate) of the probe's readings (B, T*F, 2) against the targets over the masked frames, in units of
    `scale` (the data's standard deviation of cart x in m and pole angle in rad), summed over the two
    and averaged over the frames; 0 when none."""
    if not mask.any():
        return read.sum() * 0.0
    s = torch.tensor(scale, dtype=read.dtype, device=read.device)
    err = torch.nn.functional.huber_loss(read / s, targets.detach() / s, reduction="none", delta=delta).sum(-1)
    return err[mask].mean()


def physics_units(reported: torch.Tensor, target_names) -> torch.Tensor:
    """A probe's readings in its reported units (..., n_targets), degrees and metres by `target_names`,
    -> [cart x in m, pole angle in rad] (..., 2), the order and units the physics works in."""
    names = list(target_names)
    if "pole_angle_deg" not in names or "cart_x_m" not in names:
        raise ValueError(f"probe: expected targets 'pole_angle_deg' and 'cart_x_m', got {names}")
    return torch.stack([reported[..., names.index("cart_x_m")], torch.deg2rad(reported[..., names.index("pole_angle_deg")])], -1)


def probe_readings(vae, probe, latents: torch.Tensor) -> torch.Tensor:
    """Latents (B, C, T, h, w) -> the probe's [cart x in m, pole angle in rad] of every decoded frame (B, T*F, 2),
    differentiable in the latents (the VAE and the probe frozen by the caller)."""
    frames = vae.decode(latents).clamp(-1.0, 1.0)  # (B, 3, T*F, H, W)
    B, C, TF, H, W = frames.shape
    out = probe(frames.transpose(1, 2).reshape(B * TF, C, H, W))
    out = out * torch.tensor(probe.config.target_norm, dtype=out.dtype, device=out.device)
    return physics_units(out, probe.config.target_names).view(B, TF, 2)
