"""Self-forcing training and context noise: the training rollout computes exactly what inference
computes, the gradient reaches every generated chunk, and the cache is never touched by it."""
import copy
import dataclasses

import numpy as np
import pytest
import torch

from distill.batches import LatentBatch
from distill.dmd import self_forcing_rollout
from distill.presets import apply_overrides, tiny
from models.masks import teacher_forcing_mask
from models.samplers import Cond, student_sample_chunk, write_chunk, write_context
from models.schedule import FlowSchedule
from tests.test_dit import inputs, random_model


def test_gradient_step_equals_inference_step_and_leaves_cache_alone():
    m = random_model(1)
    x, t, af, an, text = inputs(m, B=2, T=5)
    cache = m.new_cache(2, window_frames=3)
    with torch.no_grad():
        for s in range(4):
            m.forward_chunk(x[:, :, s:s + 1], torch.zeros(2, 1), af[:, 4 * s:4 * s + 4], an[:, 4 * s:4 * s + 4], text, cache, write=True)
    k_before = cache.k.clone()
    args = (x[:, :, 4:5], t[:, 4:5], af[:, 16:20], an[:, 16:20], text, cache)
    with torch.enable_grad():
        y_grad = m.forward_chunk(*args, write=False)
    assert y_grad.requires_grad
    assert torch.equal(cache.k, k_before), "a gradient-carrying step must not write into the cache"
    assert not cache.k.requires_grad
    with torch.no_grad():
        y_ref = m.forward_chunk(*args, write=False)
    assert torch.allclose(y_grad, y_ref, atol=1e-6)


@pytest.mark.parametrize("level", [0.0, 0.15])
@torch.no_grad()
def test_context_noise_teacher_forcing_equals_cached_inference(level):
    """Training reads the context copy at level c (t_clean = c); inference writes its cache with
    `write_chunk(context_noise=c)`. Both must give the same prediction for the next chunk."""
    m = random_model(1)
    B, T = 2, 4
    x0, t, af, an, text = inputs(m, B=B, T=T)
    eps = torch.randn_like(x0)
    ctx = (1 - level) * x0 + level * eps
    noisy = torch.randn_like(x0)
    t_clean = torch.full((B, T), level)
    full = m(noisy, t, af, an, text, frame_mask=teacher_forcing_mask(T, 1), x_clean=ctx, t_clean=t_clean)
    cache = m.new_cache(B, window_frames=10)
    cond = Cond(af, an, text)
    outs = []
    for s in range(T):
        sub = cond.frames(s, s + 1, 4)
        outs.append(m.forward_chunk(noisy[:, :, s:s + 1], t[:, s:s + 1], sub.action_feats, sub.action_null, text, cache, write=False))
        write_chunk(m, cache, x0[:, :, s:s + 1], sub, level, eps[:, :, s:s + 1])
    assert torch.allclose(torch.cat(outs, 2), full, atol=1e-5)


def test_self_forcing_rollout_matches_inference_and_carries_gradient():
    m = random_model(1)
    for p in m.parameters():
        p.requires_grad_(True)
    B, T, k, window = 2, 7, 2, 3  # 5 generated chunks through a 3-chunk window: evictions happen
    real, _, af, an, text = inputs(m, B=B, T=T)
    cond = Cond(af, an, text)
    ts = FlowSchedule().student_timesteps()
    torch.manual_seed(5)
    out = self_forcing_rollout(m, real, k, cond, ts, window, 0.1, np.random.default_rng(0))
    assert out.shape == real.shape and torch.equal(out[:, :, :k], real[:, :, :k])
    # the same rollout, as the env runs it (no gradient anywhere), with the same noise and exits
    torch.manual_seed(5)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        cache = m.new_cache(B, window_frames=window)
        write_context(m, cache, real[:, :, :k], cond.frames(0, k, 4), 0.1)
        ref = []
        for c0 in range(k, T):
            e = int(rng.integers(0, len(ts)))
            x0, _ = student_sample_chunk(m, cache, torch.randn(B, 8, 1, 8, 12), cond.frames(c0, c0 + 1, 4), ts, exit_step=e,
                                         context_noise=0.1)
            ref.append(x0)
    assert torch.allclose(out[:, :, k:].detach(), torch.cat(ref, 2), atol=1e-5)
    # the gradient reaches every generated chunk through its own exit step
    for c in range(k, T):
        m.zero_grad()
        out[:, :, c].pow(2).sum().backward(retain_graph=True)
        g = sum(p.grad.abs().sum() for p in m.parameters() if p.grad is not None)
        assert g > 0, f"chunk {c} carries no gradient"


def test_latent_batch_window_slices_every_field():
    B, T, F = 2, 5, 4
    lb = LatentBatch(torch.randn(B, 8, T, 8, 12), torch.randn(B, T * F, 2), torch.zeros(B, T * F, dtype=torch.bool), ["a", None],
                     torch.randn(B, T * F), torch.zeros(B, T * F, dtype=torch.bool))
    w = lb.window((4, 12))
    assert w.latents.shape[2] == 2 and torch.equal(w.latents, lb.latents[:, :, 1:3])
    assert torch.equal(w.action_feats, lb.action_feats[:, 4:12]) and w.rewards.shape == (B, 8)
    with pytest.raises(ValueError, match="multiples"):
        lb.window((3, 12))


def test_overrides_set_values_and_reject_bad_ones():
    cfg = apply_overrides(tiny(), ["teacher.steps=7", "dmd.rollout=teacher_forcing", "dmd.lr_generator=1e-3", "context_noise=0.1"])
    assert cfg.teacher.steps == 7 and cfg.dmd.rollout == "teacher_forcing" and cfg.dmd.lr_generator == 1e-3 and cfg.context_noise == 0.1
    with pytest.raises(ValueError, match="unknown key 'stepz'"):
        apply_overrides(tiny(), ["teacher.stepz=3"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        apply_overrides(tiny(), ["teacher.steps"])
    with pytest.raises(ValueError, match="cannot parse .many. as int"):
        apply_overrides(tiny(), ["teacher.steps=many"])
    with pytest.raises(ValueError, match="is a section"):
        apply_overrides(tiny(), ["teacher=3"])
    # a section's own checks run on the values set, all of them together (an intermediate state may be invalid)
    cfg = apply_overrides(tiny(), ["ode_init.regression_weight=0", "ode_init.contrast_weight=1"])
    assert cfg.ode_init.regression_weight == 0 and cfg.ode_init.contrast_weight == 1
    with pytest.raises(ValueError, match="--set ode_init.keep_weight=-1: ode_init.keep_weight: must be >= 0"):
        apply_overrides(tiny(), ["ode_init.keep_weight=-1"])


def _rollout(model, clips, codec, bank, paired=False):
    """The student's self-forcing rollout of `clips` after 1 real frame through a 3-frame window, with
    fixed noise (the evaluation the DMD tests compare before and after training) -> (rollout, batch)."""
    from distill.batches import make_batch

    rng = np.random.default_rng(0)
    batch = make_batch(clips, codec, rng)
    torch.manual_seed(0)
    with torch.no_grad():
        out = self_forcing_rollout(model, batch.latents, 1, batch.cond(model, bank), FlowSchedule().student_timesteps(), 3, 0.0, rng,
                                   paired=paired)
    return out, batch


def _sensitive_state_head():
    """A tiny state head whose reading depends on the latents (an untrained one reads almost a
    constant; a trained one is sensitive to them)."""
    from models.heads import StateHead, StateHeadConfig

    torch.manual_seed(0)
    head = StateHead(StateHeadConfig(latent_channels=8, latent_height=8, latent_width=12, frames_per_latent=4)).requires_grad_(False)
    head.net[-1].weight.mul_(30.0)
    return head


class _FixedClips:
    """Two fixed clips: the generator can only lower its regression error by learning them."""

    def __init__(self, T=6, seed=0):
        g = np.random.default_rng(seed)
        self.clips = [{"latents": g.standard_normal((T, 8, 8, 12)).astype(np.float32) * 0.5, "actions": g.integers(0, 2, T * 4),
                       "action_mask": np.ones(T * 4, bool), "rewards": np.ones(T * 4, np.float32),
                       "terminated": np.zeros(T * 4, bool), "prompt": "p"} for _ in range(2)]

    def sample(self, B, T, rng, from_start=False):
        return [{k: (v[:T] if k == "latents" else v[:T * 4] if isinstance(v, np.ndarray) else v) for k, v in c.items()} for c in self.clips[:B]]


def test_self_forcing_dmd_training_lowers_rollout_error(tmp_path):
    """A few self-forcing steps with the data term make the student's own rollouts (through a
    window smaller than the rollout) closer to the real future: the gradient path trains."""
    from distill.batches import PromptBank
    from distill.dmd import DMDConfig, train_dmd
    from models.actions import ActionCodec
    from models.dit import DiT

    m = random_model(1)
    ds = _FixedClips()
    bank = PromptBank(["p"], [torch.randn(3, 384)], [torch.ones(3, dtype=torch.bool)])
    codec = ActionCodec(m.config.action_space)
    schedule = FlowSchedule()

    def rollout_error(model):
        out, batch = _rollout(model, ds.sample(2, 6, None, True), codec, bank)
        return torch.nn.functional.mse_loss(out[:, :, 1:], batch.latents[:, :, 1:]).item()

    cfg = DMDConfig(steps=25, batch_size=2, rollout="self_forcing", rollout_latent_frames=6, window_frames=3, score_frames=4,
                    max_context_frames=1, p_from_start=1.0, ttur=1, lr_generator=3e-3, lr_fake=1e-3, data_weight=1.0,
                    save_every=100, log_every=5)
    train_dmd(copy.deepcopy(m), copy.deepcopy(m), ds, codec, bank, schedule, cfg, tmp_path / "dmd")
    trained = DiT.from_pretrained(tmp_path / "dmd" / "model")
    before, after = rollout_error(m), rollout_error(trained)
    assert after < 0.7 * before, (before, after)


class _Killed(Exception):
    pass


class _DyingClips(_FixedClips):
    """The fixed clips, dying at the `kill_at`-th sample (a process killed mid-step)."""

    def __init__(self, kill_at=None):
        super().__init__()
        self.calls, self.kill_at = 0, kill_at

    def sample(self, *a, **k):
        self.calls += 1
        if self.calls == self.kill_at:
            raise _Killed()
        return super().sample(*a, **k)


@pytest.mark.parametrize("rollout", ["self_forcing", "teacher_forcing"])
def test_killed_dmd_resumes_with_nothing_lost(tmp_path, rollout):
    """DMD through the stage runner (two models, two optimisers, TTUR): killed after its step-2
    checkpoint and resumed, it ends with exactly the generator and fake score of a straight run."""
    from distill.batches import PromptBank
    from distill.dmd import DMDConfig, train_dmd
    from models.actions import ActionCodec
    from models.dit import DiT

    m = random_model(1)
    bank = PromptBank(["p"], [torch.randn(3, 384)], [torch.ones(3, dtype=torch.bool)])
    codec = ActionCodec(m.config.action_space)
    cfg = DMDConfig(steps=4, batch_size=2, rollout=rollout, rollout_latent_frames=4, window_frames=3, score_frames=3,
                    clip_latent_frames=3, context_frames=1, max_context_frames=1, p_from_start=1.0, ttur=2,
                    data_weight=1.0, save_every=2, log_every=1)

    def run(ds, where):
        train_dmd(copy.deepcopy(m), copy.deepcopy(m), ds, codec, bank, FlowSchedule(), cfg, tmp_path / where)

    run(_DyingClips(), "straight")
    with pytest.raises(_Killed):
        run(_DyingClips(kill_at=4), "resumed")  # dies during step 4
    assert not (tmp_path / "resumed" / "DONE").exists() and (tmp_path / "resumed" / "state.pt").exists()
    run(_DyingClips(), "resumed")
    a, b = (DiT.from_pretrained(tmp_path / d / "model").state_dict() for d in ("straight", "resumed"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa, sb = (torch.load(tmp_path / d / "state.pt", weights_only=False) for d in ("straight", "resumed"))
    assert sa["step"] == sb["step"] == 4 and set(sa["modules"]) == {"generator", "fake"} and set(sa["optimizers"]) == {"opt_g", "opt_f"}
    for k, v in sa["modules"]["fake"].items():
        assert torch.equal(v, sb["modules"]["fake"][k]), k


def test_killed_heads_resume_with_nothing_lost(tmp_path):
    from distill.train_heads import HeadsTrainConfig, train_heads
    from models.heads import HeadsConfig, RewardTerminationHead

    hc = HeadsConfig(latent_channels=4, latent_height=4, latent_width=6, frames_per_latent=4, hidden=16)

    class Clips:
        def __init__(self, kill_at=None):
            self.calls, self.kill_at = 0, kill_at

        def sample(self, B, T, rng):
            self.calls += 1
            if self.calls == self.kill_at:
                raise _Killed()
            return [{"latents": rng.standard_normal((T, 4, 4, 6)).astype(np.float32),
                     "rewards": np.ones(T * 4, np.float32), "terminated": rng.random(T * 4) < 0.2} for _ in range(B)]

    cfg = HeadsTrainConfig(steps=6, batch_size=4, save_every=3, log_every=2, heads=hc)
    train_heads(Clips(), cfg, tmp_path / "straight")
    with pytest.raises(_Killed):
        train_heads(Clips(kill_at=5), cfg, tmp_path / "resumed")
    assert not (tmp_path / "resumed" / "DONE").exists()
    summary = train_heads(Clips(), cfg, tmp_path / "resumed")
    assert summary["steps"] == 6
    a, b = (RewardTerminationHead.from_pretrained(tmp_path / d / "model").state_dict() for d in ("straight", "resumed"))
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_random_chunk_actions_hold_per_chunk_and_follow_the_keep_probability():
    from distill.batches import random_chunk_actions
    from models.actions import ActionCodec

    codec = ActionCodec({"type": "Discrete", "n": 2, "start": 0})
    rng = np.random.default_rng(0)
    f = random_chunk_actions(codec, 200, 4, rng, p_keep=0.0)
    assert f.shape == (800, 2) and np.allclose(f.sum(1), 1)  # one-hot, every frame
    per_chunk = f.reshape(200, 4, 2)
    assert (per_chunk == per_chunk[:, :1]).all(), "an action is held for the chunk's frames"
    a = per_chunk[:, 0, 1]
    assert 0.35 < a.mean() < 0.65  # both actions
    switches = lambda x: float(np.mean(x[1:] != x[:-1]))
    assert 0.35 < switches(a) < 0.65  # fresh draws: switch about half the time
    held = random_chunk_actions(codec, 200, 4, rng, p_keep=0.9).reshape(200, 4, 2)[:, 0, 1]
    assert switches(held) < 0.15
    assert switches(random_chunk_actions(codec, 50, 4, rng, p_keep=1.0).reshape(50, 4, 2)[:, 0, 1]) == 0.0
    with pytest.raises(ValueError, match="p_keep"):
        random_chunk_actions(codec, 4, 4, rng, p_keep=1.5)


def test_with_random_actions_changes_only_the_chosen_rows_after_the_context():
    from distill.batches import with_random_actions
    from models.actions import ActionCodec

    codec = ActionCodec({"type": "Discrete", "n": 2, "start": 0})
    B, T, F = 3, 5, 4
    feats = torch.zeros(B, T * F, 2)
    feats[..., 0] = 1  # every frame: action 0
    null = torch.zeros(B, T * F, dtype=torch.bool)
    null[:, :F] = True  # the still chunk has no action
    batch = LatentBatch(torch.randn(B, 8, T, 2, 3), feats, null, ["p"] * B, torch.zeros(B, T * F), torch.zeros(B, T * F, dtype=torch.bool))
    rows = np.array([False, True, False])
    out = with_random_actions(batch, rows, 2 * F, codec, F, np.random.default_rng(1), p_keep=0.0)
    assert torch.equal(out.action_feats[~torch.from_numpy(rows)], feats[~torch.from_numpy(rows)])
    assert torch.equal(out.action_feats[1, :2 * F], feats[1, :2 * F]) and torch.equal(out.action_null[1], null[1])
    assert torch.allclose(out.action_feats[1, 2 * F:].sum(-1), torch.ones(3 * F))
    assert torch.equal(out.latents, batch.latents)
    with pytest.raises(ValueError, match="start_frame"):
        with_random_actions(batch, rows, 2 * F + 1, codec, F, np.random.default_rng(1))


def test_dmd_with_scripted_rollouts_skips_their_data_term_and_checks_its_setting(tmp_path):
    """All rollouts scripted: the data term has no clip to regress onto (0), DMD still trains; a bad
    share or teacher forcing is refused with the setting's name."""
    import json

    from distill.batches import PromptBank
    from distill.dmd import DMDConfig, train_dmd
    from models.actions import ActionCodec

    m = random_model(1)
    bank = PromptBank(["p"], [torch.randn(3, 384)], [torch.ones(3, dtype=torch.bool)])
    codec = ActionCodec(m.config.action_space)
    cfg = DMDConfig(steps=2, batch_size=2, rollout="self_forcing", rollout_latent_frames=4, window_frames=3, score_frames=3,
                    max_context_frames=1, p_from_start=1.0, ttur=1, data_weight=1.0, p_random_actions=1.0, save_every=2, log_every=1)
    train_dmd(copy.deepcopy(m), copy.deepcopy(m), _FixedClips(), codec, bank, FlowSchedule(), cfg, tmp_path / "dmd")
    rows = [json.loads(x) for x in (tmp_path / "dmd" / "log.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "losses/data" in r]
    assert logged and all(r["losses/data"] == 0.0 and r["charts/scripted_rollouts"] == 1.0 for r in logged)
    assert all(np.isfinite(r["losses/dmd"]) for r in logged)
    with pytest.raises(ValueError, match="p_random_actions"):
        train_dmd(m, m, _FixedClips(), codec, bank, FlowSchedule(), DMDConfig(p_random_actions=2.0), tmp_path / "bad")
    with pytest.raises(ValueError, match="p_random_actions"):
        train_dmd(m, m, _FixedClips(), codec, bank, FlowSchedule(), DMDConfig(p_random_actions=0.5, rollout="teacher_forcing"),
                  tmp_path / "bad2")


class _ClipsWithStates(_FixedClips):
    """The fixed clips with per-frame simulator states: what `head` reads off their latents (a head
    trained on real latents reads the real states)."""

    def __init__(self, head, T=6, seed=0):
        super().__init__(T, seed)
        for c in self.clips:
            with torch.no_grad():
                z = torch.from_numpy(c["latents"]).permute(1, 0, 2, 3)[None]  # (T, C, h, w) -> (1, C, T, h, w)
                c["states"] = head.predict(z)[0].numpy()


def test_dmd_state_loss_pulls_rollouts_toward_the_real_states_and_checks_its_setting(tmp_path):
    """The auxiliary state loss alone (no data term, DMD on) lowers the frozen state head's error on
    the student's own rollouts; without a head, without states, or under teacher forcing it is refused
    with the setting's name."""
    import json

    from distill.batches import PromptBank
    from distill.dmd import DMDConfig, train_dmd
    from distill.train_teacher import state_readout_loss
    from models.actions import ActionCodec
    from models.dit import DiT

    m = random_model(1)
    head = _sensitive_state_head()
    ds = _ClipsWithStates(head)
    bank = PromptBank(["p"], [torch.randn(3, 384)], [torch.ones(3, dtype=torch.bool)])
    codec = ActionCodec(m.config.action_space)
    schedule = FlowSchedule()

    def state_error(model):
        out, batch = _rollout(model, ds.sample(2, 6, None, True), codec, bank)
        mask = torch.zeros(2, 6, dtype=torch.bool)
        mask[:, 1:] = True
        return state_readout_loss(head, out, batch.states, mask, dims=(0, 2)).item()

    cfg = DMDConfig(steps=20, batch_size=2, rollout="self_forcing", rollout_latent_frames=6, window_frames=3, score_frames=4,
                    max_context_frames=1, p_from_start=1.0, ttur=1, lr_generator=3e-3, lr_fake=1e-3, state_weight=5.0,
                    save_every=100, log_every=1)
    train_dmd(copy.deepcopy(m), copy.deepcopy(m), ds, codec, bank, schedule, cfg, tmp_path / "dmd", state_head=head)
    rows = [json.loads(x) for x in (tmp_path / "dmd" / "log.jsonl").read_text().splitlines()]
    assert [r for r in rows if r.get("losses/state", 0) > 0]
    before, after = state_error(m), state_error(DiT.from_pretrained(tmp_path / "dmd" / "model"))
    assert after < 0.7 * before, (before, after)
    with pytest.raises(ValueError, match="dmd.state_weight > 0 needs a trained state head"):
        train_dmd(m, m, ds, codec, bank, schedule, DMDConfig(state_weight=1.0), tmp_path / "bad")
    with pytest.raises(ValueError, match="dmd.state_weight > 0 needs dmd.rollout=self_forcing"):
        train_dmd(m, m, ds, codec, bank, schedule, DMDConfig(state_weight=1.0, rollout="teacher_forcing"), tmp_path / "bad2",
                  state_head=head)
    with pytest.raises(ValueError, match="per-frame 'states'"):
        train_dmd(m, m, _FixedClips(), codec, bank, schedule, dataclasses.replace(cfg, steps=1), tmp_path / "bad3", state_head=head)


def test_state_loss_mask_covers_generated_acted_real_frames_within_the_horizon():
    from distill.dmd import state_loss_mask

    null = torch.zeros(3, 6 * 4, dtype=torch.bool)
    null[2, 8:12] = True  # clip 2: latent frame 2's actions dropped
    real = torch.tensor([True, False, True])
    m = state_loss_mask(null, real, k=1, T=6, horizon=0)
    assert m.tolist() == [[False, True, True, True, True, True], [False] * 6, [False, True, False, True, True, True]]
    m = state_loss_mask(null, real, k=2, T=6, horizon=2)
    assert m.tolist() == [[False, False, True, True, False, False], [False] * 6, [False, False, False, True, False, False]]


def test_data_regression_loss_covers_the_horizon_after_the_context_of_real_rollouts():
    from distill.dmd import data_regression_loss

    real = torch.zeros(2, 3, 5, 2, 2)
    gen = torch.zeros_like(real)
    gen[:, :, 0] = 9.0  # the context frame never counts
    gen[:, :, 1] = 1.0
    gen[:, :, 3] = 2.0
    both = torch.tensor([True, True])
    assert data_regression_loss(gen, real, 1, 0, both).item() == pytest.approx((1 + 4) / 4)
    assert data_regression_loss(gen, real, 1, 2, both).item() == pytest.approx(1 / 2)
    gen[1] += 1.0  # rollout 1 is scripted: it is left out
    assert data_regression_loss(gen, real, 1, 2, torch.tensor([True, False])).item() == pytest.approx(1 / 2)
    assert data_regression_loss(gen, real, 1, 2, torch.tensor([False, False])).item() == 0.0


def test_pair_state_loss_scores_only_the_difference_between_the_members():
    from distill.dmd import pair_state_loss
    from models.heads import StateHead, StateHeadConfig

    torch.manual_seed(0)
    head = StateHead(StateHeadConfig(latent_channels=8, latent_height=8, latent_width=12, frames_per_latent=4)).requires_grad_(False)
    z = torch.randn(4, 8, 3, 8, 12)
    read = head.predict(z)
    shift = torch.zeros(4, 12, 4)
    shift[:, :, 0] = 3.0  # both members read 3 m off the truth: the difference is still right
    assert pair_state_loss(head, z, read + shift).item() < 1e-8
    wrong = read.clone()
    wrong[:2, :, 2] += 0.5  # the left members' angle is off: the difference is wrong
    assert pair_state_loss(head, z, wrong, dims=(0, 2)).item() > 1e-3
    assert pair_state_loss(head, z, wrong, dims=(1, 3)).item() < 1e-8
    with pytest.raises(ValueError, match="even number"):
        pair_state_loss(head, z[:3], read[:3])


class _Pairs:
    """A branch sampler over the fixed clips: the right member is the left one with its actions flipped
    and its states' angle moved (what the push did)."""

    def __init__(self, clips):
        self.clips = clips

    def pairs_at_context(self, n, k, num_latent, rng):
        left = [{kk: (v[:num_latent] if kk == "latents" else v[:num_latent * 4] if isinstance(v, np.ndarray) else v)
                 for kk, v in c.items()} for c in self.clips[:n]]
        right = []
        for c in left:
            r = dict(c)
            r["actions"] = 1 - c["actions"]
            r["states"] = c["states"].copy()
            r["states"][k * 4:, 2] += np.linspace(0.1, 1.0, len(r["states"]) - k * 4, dtype=np.float32)
            right.append(r)
        return left, right


def test_dmd_pair_loss_teaches_the_action_effect_and_checks_its_setting(tmp_path):
    """The pair loss alone (DMD on, no data term) makes the state head read a larger left/right
    difference of the pole angle off the student's paired rollouts, toward the real one; without
    branches it is refused with the setting's name."""
    import json

    from distill.batches import PromptBank
    from distill.dmd import DMDConfig, pair_state_loss, train_dmd
    from models.actions import ActionCodec
    from models.dit import DiT

    m = random_model(1)
    head = _sensitive_state_head()
    ds = _ClipsWithStates(head)
    pairs = _Pairs(ds.clips)
    bank = PromptBank(["p"], [torch.randn(3, 384)], [torch.ones(3, dtype=torch.bool)])
    codec = ActionCodec(m.config.action_space)
    schedule = FlowSchedule()

    def pair_error(model):
        left, right = pairs.pairs_at_context(2, 1, 4, None)
        out, b = _rollout(model, left + right, codec, bank, paired=True)
        return pair_state_loss(head, out[:, :, 1:], b.states[:, 4:], (0, 2)).item()

    cfg = DMDConfig(steps=20, batch_size=2, rollout="self_forcing", rollout_latent_frames=6, window_frames=3, score_frames=4,
                    max_context_frames=1, p_from_start=1.0, ttur=1, lr_generator=3e-3, lr_fake=1e-3, pair_weight=5.0, pair_count=2,
                    pair_frames=3, save_every=100, log_every=1)
    train_dmd(copy.deepcopy(m), copy.deepcopy(m), ds, codec, bank, schedule, cfg, tmp_path / "dmd", state_head=head, branches=pairs)
    rows = [json.loads(x) for x in (tmp_path / "dmd" / "log.jsonl").read_text().splitlines()]
    assert [r for r in rows if r.get("losses/pair", 0) > 0]
    before, after = pair_error(m), pair_error(DiT.from_pretrained(tmp_path / "dmd" / "model"))
    assert after < 0.7 * before, (before, after)
    with pytest.raises(ValueError, match="dmd.pair_weight > 0 needs branching episodes"):
        train_dmd(m, m, ds, codec, bank, schedule, DMDConfig(pair_weight=1.0), tmp_path / "bad", state_head=head)
    with pytest.raises(ValueError, match="dmd.pair_weight > 0 needs a trained state head"):
        train_dmd(m, m, ds, codec, bank, schedule, DMDConfig(pair_weight=1.0), tmp_path / "bad2", branches=pairs)


def test_dmd_generator_ema_is_what_the_stage_hands_on_and_starts_on_an_older_state(tmp_path):
    """With `ema_decay` the stage keeps an EMA of the generator: model/ and model_stepN/ hold it,
    raw_stepN/ the live generator, and it equals the hand-computed average of the raw steps. A
    state.pt saved before the EMA existed resumes, the EMA starting at the generator it restores."""
    from distill.batches import PromptBank
    from distill.dmd import DMDConfig, train_dmd
    from models.actions import ActionCodec
    from models.dit import DiT

    m = random_model(1)
    bank = PromptBank(["p"], [torch.randn(3, 384)], [torch.ones(3, dtype=torch.bool)])
    codec = ActionCodec(m.config.action_space)
    base = DMDConfig(steps=2, batch_size=2, rollout_latent_frames=4, window_frames=3, score_frames=3, max_context_frames=1,
                     p_from_start=1.0, ttur=1, data_weight=1.0, lr_generator=1e-3, save_every=1, log_every=1, snapshot_every=1)
    cfg = dataclasses.replace(base, ema_decay=0.5)
    stage = tmp_path / "dmd"
    train_dmd(copy.deepcopy(m), copy.deepcopy(m), _FixedClips(), codec, bank, FlowSchedule(), cfg, stage)
    raw1, raw2, model, snap2 = (DiT.from_pretrained(stage / d).state_dict() for d in ("raw_step1", "raw_step2", "model", "model_step2"))
    init = m.state_dict()
    k = next(k for k in init if init[k].is_floating_point() and not torch.equal(raw2[k], init[k]))
    expect = 0.25 * init[k] + 0.25 * raw1[k] + 0.5 * raw2[k]  # ema0 = init; ema <- (ema + raw) / 2 per step
    torch.testing.assert_close(model[k], expect)
    torch.testing.assert_close(snap2[k], expect)
    assert not torch.equal(model[k], raw2[k])
    assert "generator_ema" in torch.load(stage / "state.pt", weights_only=False)["modules"]

    old = tmp_path / "old"  # a stage trained without the EMA, continued with one
    train_dmd(copy.deepcopy(m), copy.deepcopy(m), _FixedClips(), codec, bank, FlowSchedule(), dataclasses.replace(base, steps=1), old)
    (old / "DONE").unlink()
    before = DiT.from_pretrained(old / "model").state_dict()
    train_dmd(copy.deepcopy(m), copy.deepcopy(m), _FixedClips(), codec, bank, FlowSchedule(), cfg, old)
    raw, ema = (DiT.from_pretrained(old / d).state_dict() for d in ("raw_step2", "model"))
    torch.testing.assert_close(ema[k], 0.5 * before[k] + 0.5 * raw[k])
    # a resumed stage runs at the rates it is given now, not at the ones its optimisers were saved with
    (old / "DONE").unlink()
    train_dmd(copy.deepcopy(m), copy.deepcopy(m), _FixedClips(), codec, bank, FlowSchedule(),
              dataclasses.replace(cfg, steps=3, lr_generator=3e-4, lr_fake=7e-4), old)
    opts = torch.load(old / "state.pt", weights_only=False)["optimizers"]
    assert [g["lr"] for g in opts["opt_g"]["param_groups"]] == [3e-4] and [g["lr"] for g in opts["opt_f"]["param_groups"]] == [7e-4]


def test_dmd_score_windows_from_the_real_context_train_and_check_they_fit(tmp_path, monkeypatch):
    """`score_from_context`: the teacher's window starts inside the real context (never on a generated
    frame read as clean context); it trains, and a window that cannot fit is a clear error."""
    from distill.batches import PromptBank
    from distill.dmd import DMDConfig, train_dmd
    from models.actions import ActionCodec
    from models.dit import DiT

    m = random_model(1)
    bank = PromptBank(["p"], [torch.randn(3, 384)], [torch.ones(3, dtype=torch.bool)])
    codec = ActionCodec(m.config.action_space)
    cfg = DMDConfig(steps=2, batch_size=2, rollout_latent_frames=4, window_frames=3, score_frames=3, max_context_frames=2,
                    p_from_start=0.0, ttur=1, save_every=1, log_every=1, score_from_context=True)
    import distill.dmd as dmd_module

    clips, firsts = _FixedClips(), []
    real_frames = [torch.from_numpy(c["latents"][j]) for c in clips.clips for j in range(cfg.max_context_frames)]
    score = dmd_module._score

    def recording_score(net, x, t, cond, causal, guidance, clean):
        firsts.append(clean[:, :, 0].detach().clone())  # the window's first frame: the teacher's clean context
        return score(net, x, t, cond, causal, guidance, clean)

    monkeypatch.setattr(dmd_module, "_score", recording_score)
    train_dmd(copy.deepcopy(m), copy.deepcopy(m), clips, codec, bank, FlowSchedule(), cfg, tmp_path / "dmd")
    assert (tmp_path / "dmd" / "DONE").exists()
    assert not torch.equal(DiT.from_pretrained(tmp_path / "dmd" / "model").state_dict()["final_adaLN.1.weight"], m.state_dict()["final_adaLN.1.weight"])
    assert firsts and all(any(torch.equal(row, r) for r in real_frames) for f in firsts for row in f)
    with pytest.raises(ValueError, match="score_from_context"):
        train_dmd(m, m, _FixedClips(), codec, bank, FlowSchedule(), dataclasses.replace(cfg, score_frames=4), tmp_path / "bad")


@pytest.mark.parametrize("level", [0.0, 0.1])
def test_gradient_through_the_cache_equals_the_block_causal_forward(level):
    """`keep_grad`: a later chunk's gradient-carrying pass reads the written chunks with their graph.
    Its output and its gradient with respect to the written chunks' x0 and to the weights equal
    those of the full block-causal (teacher-forcing) forward; without it the written chunks get none."""
    m = random_model(1)
    B, T = 2, 3
    noisy, t, af, an, text = inputs(m, B=B, T=T)
    x0 = torch.randn_like(noisy).requires_grad_(True)
    eps = torch.randn_like(noisy)
    cond = Cond(af, an, text)
    # full forward: chunk T-1 (noisy) attends to the clean copy of chunks 0..T-2 at the context level
    ctx = (1 - level) * x0 + level * eps
    full = m(noisy, t, af, an, text, frame_mask=teacher_forcing_mask(T, 1), x_clean=ctx, t_clean=torch.full((B, T), level))
    g_full_x, g_full_w = torch.autograd.grad(full[:, :, -1].pow(2).sum(), [x0, m.final_adaLN[1].weight])

    def cached(keep: bool):
        cache = m.new_cache(B, window_frames=10)
        for s in range(T - 1):
            sub = cond.frames(s, s + 1, 4)
            if keep:
                xs = (1 - level) * x0[:, :, s:s + 1] + level * eps[:, :, s:s + 1]
                m.forward_chunk(xs, torch.full((B, 1), level), sub.action_feats, sub.action_null, text, cache, write=True,
                                keep_grad=True)
            else:
                write_chunk(m, cache, x0[:, :, s:s + 1].detach(), sub, level, eps[:, :, s:s + 1])
        sub = cond.frames(T - 1, T, 4)
        return m.forward_chunk(noisy[:, :, -1:], t[:, -1:], sub.action_feats, sub.action_null, text, cache, write=False)

    y = cached(keep=True)
    assert torch.allclose(y, full[:, :, -1:], atol=1e-5)
    g_x, g_w = torch.autograd.grad(y.pow(2).sum(), [x0, m.final_adaLN[1].weight])
    assert all(g_x[:, :, s].abs().sum() > 0 for s in range(T - 1))
    assert torch.allclose(g_x, g_full_x, atol=1e-5), (g_x - g_full_x).abs().max()
    assert torch.allclose(g_w, g_full_w, atol=1e-4)
    y_detached = cached(keep=False)
    assert torch.allclose(y_detached, y, atol=1e-6)
    (g_none,) = torch.autograd.grad(y_detached.pow(2).sum(), [x0], allow_unused=True)
    assert g_none is None or g_none.abs().sum() == 0
    with pytest.raises(ValueError, match="keep_grad"):
        with torch.no_grad():
            m.forward_chunk(noisy[:, :, :1], t[:, :1], af[:, :4], an[:, :4], text, m.new_cache(B, window_frames=4), write=True,
                            keep_grad=True)


def test_self_forcing_rollout_with_cache_gradient_computes_the_same_and_reaches_earlier_chunks():
    m = random_model(1).requires_grad_(True)
    B, T, k, window = 2, 5, 1, 3
    ts = FlowSchedule().student_timesteps()
    outs, grads = [], []
    for cache_grad in (False, True):
        real, _, af, an, text = inputs(m, B=B, T=T)  # a fresh prompt: its keys/values carry a graph once used
        cond = Cond(af, an, text)
        torch.manual_seed(5)
        out = self_forcing_rollout(m, real, k, cond, ts, window, 0.1, np.random.default_rng(0), cache_grad=cache_grad)
        outs.append(out.detach())
        m.zero_grad()
        out[:, :, -1].pow(2).sum().backward()  # a loss on the last chunk only
        grads.append(m.blocks[0].attn.qkv.weight.grad.clone())
    assert all(p.requires_grad for p in m.parameters()), "the writing passes' frozen weights must be restored"
    assert torch.allclose(outs[0], outs[1], atol=1e-6), "the gradient path must not change the numbers"
    assert not torch.allclose(grads[0], grads[1]), "a loss on the last chunk must also reach the chunks before it"


def test_dmd_with_gradient_through_the_cache_trains_and_checks_its_setting(tmp_path):
    from distill.batches import PromptBank
    from distill.dmd import DMDConfig, train_dmd
    from models.actions import ActionCodec
    from models.dit import DiT

    m = random_model(1)
    bank = PromptBank(["p"], [torch.randn(3, 384)], [torch.ones(3, dtype=torch.bool)])
    codec = ActionCodec(m.config.action_space)
    cfg = DMDConfig(steps=2, batch_size=2, rollout_latent_frames=4, window_frames=3, score_frames=3, max_context_frames=2,
                    ttur=1, save_every=1, log_every=1, cache_grad=True)
    train_dmd(copy.deepcopy(m), copy.deepcopy(m), _FixedClips(), codec, bank, FlowSchedule(), cfg, tmp_path / "dmd")
    trained = DiT.from_pretrained(tmp_path / "dmd" / "model").state_dict()
    assert not torch.equal(trained["final_adaLN.1.weight"], m.state_dict()["final_adaLN.1.weight"])
    with pytest.raises(ValueError, match="cache_grad"):
        train_dmd(m, m, _FixedClips(), codec, bank, FlowSchedule(), dataclasses.replace(cfg, rollout="teacher_forcing"), tmp_path / "bad")


def test_dmd_with_the_ode_anchor_logs_its_losses_and_checks_its_setting(tmp_path):
    """The ODE pairs' regression and contrast loss kept on during self-forcing DMD: both are logged
    each step (a real error from a student that is not the teacher); without pairs, without contrast
    shards, or under teacher forcing it is refused with the setting's name."""
    import json

    from distill.batches import PromptBank
    from distill.dmd import DMDConfig, train_dmd
    from distill.ode_pairs import ODEPairsConfig, generate_ode_pairs, load_ode_pairs
    from models.actions import ActionCodec

    m = random_model(1)
    bank = PromptBank(["p"], [torch.randn(3, 384)], [torch.ones(3, dtype=torch.bool)])
    codec = ActionCodec(m.config.action_space)
    pcfg = ODEPairsConfig(num_pairs=2, batch_size=4, clip_latent_frames=4, num_steps=2, context_frames=1, p_no_context=0.0)
    generate_ode_pairs(m, _FixedClips(), codec, bank, FlowSchedule(), pcfg, tmp_path / "plain")
    pcfg.num_contrast_pairs = 4
    generate_ode_pairs(m, _FixedClips(), codec, bank, FlowSchedule(), pcfg, tmp_path / "pairs")
    student = copy.deepcopy(m)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.02 * torch.randn_like(p))
    cfg = DMDConfig(steps=3, batch_size=2, rollout_latent_frames=4, window_frames=3, score_frames=3, max_context_frames=1,
                    ttur=1, save_every=3, log_every=1, ode_weight=1.0, ode_contrast_weight=2.0, ode_batch_size=4)
    train_dmd(student, copy.deepcopy(m), _FixedClips(), codec, bank, FlowSchedule(), cfg, tmp_path / "dmd",
              ode_shards=load_ode_pairs(tmp_path / "pairs"))
    rows = [json.loads(x) for x in (tmp_path / "dmd" / "log.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "losses/ode" in r]
    assert len(logged) == 3 and all(r["losses/ode"] > 0 and r["losses/ode_contrast"] > 0 for r in logged)
    with pytest.raises(ValueError, match="ode_pairs stage"):
        train_dmd(m, m, _FixedClips(), codec, bank, FlowSchedule(), cfg, tmp_path / "bad")
    with pytest.raises(ValueError, match="no contrast shards"):
        train_dmd(m, m, _FixedClips(), codec, bank, FlowSchedule(), cfg, tmp_path / "bad2", ode_shards=load_ode_pairs(tmp_path / "plain"))
    with pytest.raises(ValueError, match="ode_weight"):
        train_dmd(m, m, _FixedClips(), codec, bank, FlowSchedule(), dataclasses.replace(cfg, rollout="teacher_forcing"), tmp_path / "bad3",
                  ode_shards=load_ode_pairs(tmp_path / "pairs"))
