"""The physics-consistency loss: CartPole's equations equal gymnasium's, the targets follow from the
frames before each chunk, and DMD trains with it (and without distribution matching)."""
import copy
import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from distill.physics_consistency import (cartpole_step, fit_last_state, physics_consistency_loss, physics_for_world,
                                         physics_targets, simulate)

DEFAULT_PROMPT = "a brown pole balanced on a black cart"


def _params(prompt: str, n: int) -> dict:
    table = physics_for_world("cartpole")
    return {k: torch.full((n,), float(v), dtype=torch.float64) for k, v in table[prompt].items() if k != "tau"}


@pytest.mark.parametrize("variant", ["default", "short_blue_strong_push", "long_red_low_gravity"])
def test_cartpole_step_equals_gymnasium(variant):
    from causvid_env.worlds import get_world
    spec = get_world("cartpole")
    v = spec.variant(variant)
    env = gym.make("CartPole-v1").unwrapped
    for k, val in (v.physics or {}).items():
        setattr(env, k, val)
    env.total_mass = env.masspole + env.masscart
    env.polemass_length = env.masspole * env.length
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    P = _params(v.prompt, 1)
    for _ in range(20):
        s = rng.uniform(-0.2, 0.2, 4)
        a = int(rng.integers(2))
        env.state = s.copy()
        want, *_ = env.step(a)
        got = cartpole_step(torch.tensor(s)[None], torch.tensor([float(a)], dtype=torch.float64), P)[0].numpy()
        np.testing.assert_allclose(got, want, atol=1e-6)


def _episode(B=3, T=6, F=4, seed=0):
    """True [x, theta] of B episodes of T latent frames that start with a still chunk, the actions, the mask."""
    g = torch.Generator().manual_seed(seed)
    prompts = [DEFAULT_PROMPT, "a short blue pole on a black cart pushed with strong force", "a long teal pole on an orange cart"][:B]
    table = physics_for_world("cartpole")
    P = {k: torch.tensor([float(table[p][k]) for p in prompts], dtype=torch.float64) for k in ("gravity", "masscart", "masspole",
                                                                                              "length", "force_mag")}
    push = torch.randint(0, 2, (B, T * F), generator=g).double()
    acted = torch.ones(B, T * F, dtype=torch.bool)
    acted[:, :F] = False
    s = torch.tensor([[0.01, 0.0, 0.03, 0.0]] * B, dtype=torch.float64)
    states = [s] * F
    for i in range(F, T * F):
        s = cartpole_step(s, push[:, i], P)
        states.append(s)
    return torch.stack(states, 1)[..., [0, 2]], push, acted, prompts


def test_targets_of_true_motion_are_the_motion_itself():
    pos, push, acted, prompts = _episode()
    targets, mask = physics_targets(pos, push, acted, prompts, "cartpole", first=1, frames_per_latent=4, fit_frames=8)
    assert not mask[:, :4].any() and mask[:, 4:].all()  # the still chunk has no target, every acted chunk has one
    torch.testing.assert_close(targets[mask], pos[mask], atol=1e-6, rtol=0)
    assert physics_consistency_loss(pos, targets, mask).item() < 1e-9
    # an unknown prompt (a dropped or foreign one) has no target; chunks before `first` have none
    targets, mask = physics_targets(pos, push, acted, [None, prompts[1], "another world"], "cartpole", 3, 4, 8)
    assert not mask[0].any() and not mask[2].any() and not mask[1, :12].any() and mask[1, 12:].all()


def test_targets_follow_the_physics_not_the_drawn_frames():
    """A chunk drawn frozen (the pole stops where it is) is pulled toward where the physics takes it."""
    pos, push, acted, prompts = _episode(seed=3)
    drawn = pos.clone()
    drawn[:, 16:20] = drawn[:, 15:16]  # latent frame 4 repeats the frame before it
    targets, mask = physics_targets(drawn, push, acted, prompts, "cartpole", 1, 4, 8)
    torch.testing.assert_close(targets[:, 16:20], pos[:, 16:20], atol=1e-6, rtol=0)
    assert physics_consistency_loss(drawn, targets, mask).item() > 1e-4


def test_fit_recovers_the_velocity_from_positions_under_pushes():
    pos, push, acted, prompts = _episode(T=4, seed=1)
    P = {k: v for k, v in _params(DEFAULT_PROMPT, 1).items()}
    s0 = torch.tensor([[0.1, 0.7, -0.05, 1.2]], dtype=torch.float64)
    acts = torch.tensor([[1, 1, 0, 1, 0, 0, 1]], dtype=torch.float64)
    traj = torch.cat([s0[:, None], simulate(s0, acts, P)], 1)
    got = fit_last_state(traj[..., [0, 2]], acts, P)
    torch.testing.assert_close(got, traj[:, -1], atol=1e-6, rtol=0)


def test_loss_is_robust_and_reaches_only_the_readings():
    read = torch.zeros(1, 4, 2, requires_grad=True)
    targets = torch.tensor([[[0.0, 0.0], [0.0, 0.155], [0.0, 10 * 0.155], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, True, False]])
    loss = physics_consistency_loss(read, targets, mask)
    loss.backward()
    assert loss.item() == pytest.approx((0.0 + 0.5 + 9.5) / 3)  # quadratic within one standard unit, linear beyond
    assert read.grad[0, 3].abs().sum() == 0 and read.grad[0, 2, 1].item() == pytest.approx(-1 / 0.155 / 3)
    assert physics_consistency_loss(read, targets, torch.zeros_like(mask)).item() == 0.0


def test_other_worlds_are_refused_with_the_setting_name():
    with pytest.raises(ValueError, match="physics_weight"):
        physics_for_world("pendulum")


class _CartPoleClips:
    """Two fixed clips with the default variant's prompt, acted from their first frame."""

    def __init__(self, T=6, seed=0):
        g = np.random.default_rng(seed)
        self.clips = [{"latents": g.standard_normal((T, 8, 8, 12)).astype(np.float32) * 0.5, "actions": g.integers(0, 2, T * 4),
                       "action_mask": np.ones(T * 4, bool), "rewards": np.ones(T * 4, np.float32),
                       "terminated": np.zeros(T * 4, bool), "prompt": DEFAULT_PROMPT} for _ in range(2)]

    def sample(self, B, T, rng, from_start=False):
        return [{k: (v[:T] if k == "latents" else v[:T * 4] if isinstance(v, np.ndarray) else v) for k, v in c.items()}
                for c in self.clips[:B]]


def test_dmd_trains_on_the_physics_loss_alone_and_checks_its_setting(tmp_path):
    """dmd_weight 0 and physics_weight > 0: no fake score is trained, the physics loss is logged and the
    generator moves; missing parts and teacher forcing are refused with the setting's name."""
    from distill.batches import PromptBank
    from distill.dmd import DMDConfig, train_dmd
    from evaluation.probe import ProbeConfig, StateProbe
    from models.actions import ActionCodec
    from models.dit import DiT
    from models.schedule import FlowSchedule
    from models.vae import CausalVAE, VAEConfig
    from tests.test_dit import random_model

    m = random_model(1)
    torch.manual_seed(0)
    vae = CausalVAE(VAEConfig(base_channels=8, mid_channels=16)).eval()
    probe = StateProbe(ProbeConfig.for_world("cartpole", channels=(4, 8, 8), hidden=16)).eval()
    bank = PromptBank([DEFAULT_PROMPT], [torch.randn(3, 384)], [torch.ones(3, dtype=torch.bool)])
    codec = ActionCodec(m.config.action_space)
    cfg = DMDConfig(steps=3, batch_size=2, rollout="self_forcing", rollout_latent_frames=4, window_frames=3, score_frames=3,
                    max_context_frames=2, p_from_start=0.0, ttur=1, lr_generator=1e-3, dmd_weight=0.0, physics_weight=1.0,
                    physics_fit_frames=4, physics_rows=1, save_every=10, log_every=1)
    train_dmd(copy.deepcopy(m), copy.deepcopy(m), _CartPoleClips(), codec, bank, FlowSchedule(), cfg, tmp_path / "dmd",
              vae=vae, probe=probe)
    rows = [json.loads(x) for x in (tmp_path / "dmd" / "log.jsonl").read_text().splitlines() if "losses/physics" in x]
    assert rows and all(r["losses/dmd"] == 0.0 and r["losses/fake_score"] == 0.0 for r in rows)
    assert all(math.isfinite(r["losses/physics"]) for r in rows) and any(r["losses/physics"] > 0 for r in rows)
    trained = DiT.from_pretrained(tmp_path / "dmd" / "model")
    moved = sum((a - b).abs().sum().item() for a, b in zip(trained.parameters(), m.parameters()))
    assert moved > 0
    with pytest.raises(ValueError, match="dmd.physics_weight > 0 needs the VAE"):
        train_dmd(m, m, _CartPoleClips(), codec, bank, FlowSchedule(), DMDConfig(physics_weight=1.0), tmp_path / "bad")
    with pytest.raises(ValueError, match="dmd.physics_weight > 0 needs dmd.rollout=self_forcing"):
        train_dmd(m, m, _CartPoleClips(), codec, bank, FlowSchedule(), DMDConfig(physics_weight=1.0, rollout="teacher_forcing"),
                  tmp_path / "bad2", vae=vae, probe=probe)
    with pytest.raises(ValueError, match="dmd.physics_rows"):
        train_dmd(m, m, _CartPoleClips(), codec, bank, FlowSchedule(), DMDConfig(physics_weight=1.0, physics_rows=-1),
                  tmp_path / "bad3", vae=vae, probe=probe)
    with pytest.raises(ValueError, match="dmd.dmd_weight"):
        train_dmd(m, m, _CartPoleClips(), codec, bank, FlowSchedule(), DMDConfig(dmd_weight=-1.0), tmp_path / "bad4")
