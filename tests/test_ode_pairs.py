"""ODE pairs: the teacher's sampling trajectories the student is initialised on."""
import pytest
import torch

from distill.batches import ClipSampler, PromptBank
from distill.ode_pairs import ODEPairsConfig, generate_ode_pairs, load_ode_pairs
from models.actions import ActionCodec, space_to_dict
from models.dit import DiT, DiTConfig
from models.schedule import FlowSchedule


def _setup(tiny_latents):
    from causvid_env.worlds import get_world

    prompts = sorted({s["prompt"] for s in tiny_latents.strings})
    bank = PromptBank(prompts, [torch.randn(3, 384) for _ in prompts], [torch.ones(3, dtype=torch.bool) for _ in prompts])
    space = space_to_dict(get_world("cartpole").make_action_space())
    torch.manual_seed(0)
    teacher = DiT(DiTConfig.from_size("tiny", latent_channels=8, latent_height=8, latent_width=12, action_space=space)).eval()
    return teacher, ActionCodec(space), bank


def test_ode_pairs_draw_context_lengths_up_to_max_context_frames(tiny_latents, tmp_path):
    teacher, codec, bank = _setup(tiny_latents)
    cfg = ODEPairsConfig(num_pairs=16, batch_size=2, clip_latent_frames=4, num_steps=2, context_frames=1, max_context_frames=3,
                         p_no_context=0.0)
    generate_ode_pairs(teacher, ClipSampler(tiny_latents), codec, bank, FlowSchedule(), cfg, tmp_path / "p")
    shards = load_ode_pairs(tmp_path / "p")
    ks = {s["context_frames"] for s in shards}
    assert ks <= {1, 2, 3} and len(ks) >= 2  # 8 shards: more than one length drawn
    for s in shards:  # the generated part is what follows the context
        assert s["x0"].shape[2] == 4 - s["context_frames"] and s["states"].shape[3] == 4 - s["context_frames"]


@pytest.mark.parametrize("bad", [4, -1])
def test_ode_pairs_reject_a_max_context_that_leaves_nothing_to_generate(tiny_latents, tmp_path, bad):
    teacher, codec, bank = _setup(tiny_latents)
    cfg = ODEPairsConfig(num_pairs=2, batch_size=2, clip_latent_frames=4, num_steps=2, max_context_frames=bad)
    with pytest.raises(ValueError, match="ode_pairs.max_context_frames"):
        generate_ode_pairs(teacher, ClipSampler(tiny_latents), codec, bank, FlowSchedule(), cfg, tmp_path / "p")


def _pairs(teacher, codec, bank, tiny_latents, path, **cfg):
    """Generate ODE pairs (an `ODEPairsConfig` from `cfg`) from the tiny latents into `path` and load them."""
    generate_ode_pairs(teacher, ClipSampler(tiny_latents), codec, bank, FlowSchedule(), ODEPairsConfig(**cfg), path)
    return load_ode_pairs(path)


def _perturb(teacher):
    """A teacher whose output depends on its inputs (a new one's last layers are zero)."""
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))


def test_contrast_shards_share_context_prompt_and_noise_and_differ_in_every_generated_chunk(tiny_latents, tmp_path):
    teacher, codec, bank = _setup(tiny_latents)
    _perturb(teacher)
    cfg = ODEPairsConfig(num_pairs=2, batch_size=4, clip_latent_frames=4, num_steps=2, context_frames=1, max_context_frames=2,
                         p_no_context=0.0, num_contrast_pairs=8)
    generate_ode_pairs(teacher, ClipSampler(tiny_latents), codec, bank, FlowSchedule(), cfg, tmp_path / "p")
    shards = load_ode_pairs(tmp_path / "p")
    paired = [s for s in shards if s["contrast"]]
    assert len(paired) == 2 and len(shards) == 3
    F = teacher.config.frames_per_latent
    for s in paired:
        k, h = s["context_frames"], 2
        assert torch.equal(s["real"][:h], s["real"][h:]) and torch.equal(s["prompt_index"][:h], s["prompt_index"][h:])
        near = (s["states"][0, :h] - s["states"][0, h:]).abs().max()  # at t = 0.9997: the same starting noise ...
        assert near < 1e-2 < (s["x0"][:h] - s["x0"][h:]).abs().max()  # ... to different results
        a, b = s["action_feats"][:h], s["action_feats"][h:]
        assert torch.equal(a[:, :k * F], b[:, :k * F])  # the context's actions are the clip's own
        gen_a, gen_b = a[:, k * F:].reshape(h, -1, F, a.shape[-1]), b[:, k * F:].reshape(h, -1, F, b.shape[-1])
        assert (gen_a != gen_b).any(-1).all()  # every generated frame's action differs
        assert (gen_a == gen_a[:, :, :1]).all() and (gen_b == gen_b[:, :, :1]).all()  # held for the chunk
        assert not s["action_null"][:, k * F:].bool().any()


def test_contrast_loss_is_zero_for_the_teachers_difference_and_counts_a_muted_action():
    from distill.ode_init import contrast_loss

    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 2, 2)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[:, :2] = False
    shifted = x + torch.randn(1, 3, 5, 2, 2)  # what both rows share may be wrong: no contrast error
    assert contrast_loss(shifted, x, mask).item() == pytest.approx(0.0, abs=1e-6)
    muted = x.clone()
    muted[2:] = muted[:2]  # the student ignores the action: the loss is the teacher's difference, on generated frames only
    want = (x[:2, :, 2:] - x[2:, :, 2:]).pow(2).mean()
    assert contrast_loss(muted, x, mask).item() == pytest.approx(want.item(), rel=1e-5)


@pytest.mark.parametrize("chunks", [0, 1])
def test_ode_init_trains_with_the_contrast_loss_and_asks_for_contrast_shards(tiny_latents, tmp_path, chunks):
    from distill.ode_init import ODEInitConfig, train_ode_init

    teacher, codec, bank = _setup(tiny_latents)
    _perturb(teacher)
    cfg = ODEPairsConfig(num_pairs=4, batch_size=4, clip_latent_frames=3, num_steps=2, p_no_context=0.0)
    generate_ode_pairs(teacher, ClipSampler(tiny_latents), codec, bank, FlowSchedule(), cfg, tmp_path / "plain")
    with pytest.raises(ValueError, match="ode_init.contrast_weight"):
        train_ode_init(teacher, load_ode_pairs(tmp_path / "plain"), bank, FlowSchedule(),
                       ODEInitConfig(steps=2, batch_size=4, contrast_weight=1.0), tmp_path / "init0")
    cfg.num_contrast_pairs = 4
    generate_ode_pairs(teacher, ClipSampler(tiny_latents), codec, bank, FlowSchedule(), cfg, tmp_path / "both")
    train_ode_init(teacher, load_ode_pairs(tmp_path / "both"), bank, FlowSchedule(),
                   ODEInitConfig(steps=10, batch_size=4, contrast_weight=1.0, p_contrast=0.5, contrast_chunks=chunks, log_every=1), tmp_path / "init")
    import json
    rows = [json.loads(l) for l in open(tmp_path / "init" / "log.jsonl")]
    c = [r["losses/ode_contrast"] for r in rows if "losses/ode_contrast" in r]
    assert 0 < len(c) < len(rows) and all(v > 0 for v in c)  # about half the steps, a real error
    assert (tmp_path / "init" / "model").is_dir()


def test_contrast_pairs_without_a_real_context_are_left_out_of_the_contrast_loss(tiny_latents, tmp_path):
    """From a prompt alone the teacher draws a different scene per script: no contrast to learn."""
    from distill.ode_init import ODEInitConfig, contrast_shards, train_ode_init

    teacher, codec, bank = _setup(tiny_latents)
    cfg = ODEPairsConfig(num_pairs=0, batch_size=4, clip_latent_frames=3, num_steps=2, p_no_context=1.0, num_contrast_pairs=4)
    generate_ode_pairs(teacher, ClipSampler(tiny_latents), codec, bank, FlowSchedule(), cfg, tmp_path / "p")
    shards = load_ode_pairs(tmp_path / "p")
    assert len(shards) == 1 and shards[0]["contrast"] and shards[0]["context_frames"] == 0
    assert contrast_shards(shards, True) == [] and contrast_shards(shards, False) == []
    with pytest.raises(ValueError, match="no contrast shards with a real context"):
        train_ode_init(teacher, shards, bank, FlowSchedule(), ODEInitConfig(steps=2, batch_size=4, contrast_weight=1.0), tmp_path / "i")


def test_a_contrast_only_fine_tune_draws_every_batch_from_the_contrast_shards_and_starts_at_its_own_predictions(tiny_latents, tmp_path):
    """regression_weight=0: the student (e.g. a DMD one) is taught the teacher's action effect only, and
    keep_weight holds what both scripts share at the starting weights' own predictions."""
    import json

    from distill.ode_init import ODEInitConfig, train_ode_init

    teacher, codec, bank = _setup(tiny_latents)
    _perturb(teacher)
    shards = _pairs(teacher, codec, bank, tiny_latents, tmp_path / "p", num_pairs=4, batch_size=4, clip_latent_frames=3, num_steps=2,
                    p_no_context=0.0, num_contrast_pairs=4)
    for bad, match in [(dict(regression_weight=0.0), "ode_init.regression_weight"), (dict(contrast_weight=1.0, keep_weight=-1.0), "ode_init.keep_weight")]:
        with pytest.raises(ValueError, match=match):
            train_ode_init(teacher, shards, bank, FlowSchedule(), ODEInitConfig(steps=2, batch_size=4, **bad), tmp_path / "bad")
    train_ode_init(teacher, shards, bank, FlowSchedule(),
                   ODEInitConfig(steps=6, batch_size=4, lr=1e-2, regression_weight=0.0, contrast_weight=1.0, keep_weight=1.0, p_contrast=0.1,
                                 log_every=1), tmp_path / "i")
    rows = [json.loads(l) for l in open(tmp_path / "i" / "log.jsonl")]
    assert len(rows) == 6 and all(r.get("losses/ode_contrast", 0) > 0 for r in rows)  # every batch a contrast batch
    keep = [r["losses/ode_keep"] for r in rows]
    assert keep[0] == pytest.approx(0.0, abs=1e-10) and max(keep[1:]) > 0  # the starting weights themselves, then it moves


def test_keep_loss_sees_only_the_common_mode_of_a_contrast_pair():
    from distill.ode_init import keep_loss

    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 2, 2)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[:, :2] = False
    d = torch.randn(2, 3, 5, 2, 2)
    spread = x + torch.cat([d, -d])  # a new action effect, the same mean: nothing to keep
    assert keep_loss(spread, x, mask, contrast=True).item() == pytest.approx(0.0, abs=1e-6)
    assert keep_loss(spread, x, mask, contrast=False).item() > 0.1
    shifted = x + 1.0  # both rows moved: counted, on generated frames only
    assert keep_loss(shifted, x, mask, contrast=True).item() == pytest.approx(1.0, rel=1e-5)


def test_contrast_pairs_from_the_still_start_chunk_give_an_image_reset_context(tiny_latents, tmp_path):
    """`p_context_from_start=1`: every context is the first latent of an episode (its still chunk), the
    context an image reset gives the env; without it the clips begin anywhere."""
    import numpy as np

    teacher, codec, bank = _setup(tiny_latents)
    firsts = [torch.from_numpy(np.asarray(lat[0])).float() for lat in tiny_latents.latents]
    cfg = dict(num_pairs=0, batch_size=4, clip_latent_frames=3, num_steps=2, context_frames=1, p_no_context=0.0,
               num_contrast_pairs=16, seed=3)
    shards = _pairs(teacher, codec, bank, tiny_latents, tmp_path / "start", p_context_from_start=1.0, **cfg)
    contexts = [s["real"][i, :, 0] for s in shards for i in range(s["real"].shape[0])]
    assert len(contexts) == 16 and all(any(torch.equal(c, f) for f in firsts) for c in contexts)
    anywhere = _pairs(teacher, codec, bank, tiny_latents, tmp_path / "any", **cfg)
    assert not all(any(torch.equal(s["real"][i, :, 0], f) for f in firsts) for s in anywhere for i in range(s["real"].shape[0]))


def test_ode_pairs_reject_a_start_fraction_outside_0_1():
    with pytest.raises(ValueError, match="ode_pairs.p_context_from_start"):
        ODEPairsConfig(p_context_from_start=1.5)


def test_temperature_scales_the_teachers_starting_noise(tiny_latents, tmp_path):
    """A fresh teacher's velocity is zero (its last layers are zero), so every recorded state is the
    starting noise: at temperature 0.2 exactly 0.2x the noise of temperature 1 from the same seeds."""
    teacher, codec, bank = _setup(tiny_latents)
    cfg = dict(num_pairs=4, batch_size=2, clip_latent_frames=4, num_steps=2, context_frames=1, p_no_context=0.0,
               num_contrast_pairs=2)
    hot = _pairs(teacher, codec, bank, tiny_latents, tmp_path / "t1", **cfg)
    cool = _pairs(teacher, codec, bank, tiny_latents, tmp_path / "t02", temperature=0.2, **cfg)
    assert len(hot) == len(cool) == 3
    for a, b in zip(hot, cool):
        torch.testing.assert_close(b["states"], 0.2 * a["states"])
        torch.testing.assert_close(b["real"], a["real"])  # the same clips
    with pytest.raises(ValueError, match="ode_pairs.temperature"):
        ODEPairsConfig(temperature=0.0)


def test_regression_min_context_keeps_short_context_pairs_on_the_starting_weights(tiny_latents, tmp_path):
    """Pairs with less real context than regression_min_context are not regressed onto the teacher:
    the keep loss holds them at the starting weights' own predictions; longer ones are regressed."""
    import copy

    import numpy as np

    from distill.ode_init import ODEInitConfig, combine_losses, ode_pair_losses, regression_and_keep

    assert regression_and_keep(1, 0) == (True, True) and regression_and_keep(3, 4) == (False, True)
    assert regression_and_keep(4, 4) == (True, False)
    for bad, match in [(dict(regression_min_context=-1, keep_weight=1.0), "ode_init.regression_min_context: must be >= 0"),
                       (dict(regression_min_context=2), "needs ode_init.keep_weight > 0")]:
        with pytest.raises(ValueError, match=match):
            ODEInitConfig(**bad)
    teacher, codec, bank = _setup(tiny_latents)
    _perturb(teacher)
    start = copy.deepcopy(teacher)
    _perturb(start)  # a warm start whose predictions differ from the teacher's
    shards = _pairs(teacher, codec, bank, tiny_latents, tmp_path / "p", num_pairs=16, batch_size=4, clip_latent_frames=3, num_steps=2,
                    context_frames=1, max_context_frames=2, p_no_context=0.0)
    assert {s["context_frames"] for s in shards} == {1, 2}  # both kinds are drawn (4 shards, seeded)
    frozen = copy.deepcopy(start).eval().requires_grad_(False)
    cfg = ODEInitConfig(keep_weight=1.0, regression_min_context=2)
    for shard in shards:  # at the starting weights: a kept batch has nothing to learn, a regressed one does
        regress, anchor = regression_and_keep(shard["context_frames"], cfg.regression_min_context)
        start.zero_grad()
        loss, c_loss, k_loss = ode_pair_losses(start, start, bank, FlowSchedule(), shard, np.random.default_rng(0), "cpu",
                                               frozen=frozen if anchor else None)
        total, scalars = combine_losses(cfg, regress, loss, c_loss, k_loss)
        total.backward()
        grad = sum(p.grad.pow(2).sum() for p in start.parameters() if p.grad is not None).sqrt().item()
        assert scalars["losses/ode_init"] > 1e-3  # the student differs from the teacher either way
        if shard["context_frames"] < 2:
            assert scalars["losses/ode_keep"] == 0.0 and grad == 0.0
        else:
            assert "losses/ode_keep" not in scalars and grad > 1e-3
