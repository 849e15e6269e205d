"""Branching episodes (the same real state continued left / right / random) and the teacher's paired loss."""
import numpy as np
import pytest
import torch

from causvid_env.worlds import get_world
from distill.branches import (KINDS, BranchCache, BranchConfig, BranchSampler, _play, action_state_correlation,
                              encode_branches, generate_branches)
from distill.collect import CollectConfig, collect
from distill.dataset import EpisodeDataset, build_latent_cache
from distill.pipeline import vae_encode_fn
from distill.train_teacher import TeacherTrainConfig, pair_difference_loss, sample_training_clips
from distill.batches import ClipSampler
from causvid_env.rendering import Simulator
from models.vae import CausalVAE, VAEConfig
from tests.helpers import TINY_VAE

SPEC = get_world("cartpole")
F = SPEC.frames_per_chunk


@pytest.fixture(scope="module")
def trunks(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    collect(CollectConfig(world="cartpole", out=str(out), episodes=3, workers=1, seed=3, max_frames=96, episodes_per_shard=3))
    return EpisodeDataset(out)


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    v = CausalVAE(VAEConfig(frame_height=64, frame_width=96, temporal_down=F, **TINY_VAE)).eval()
    with torch.no_grad():
        for p in v.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return v


@pytest.fixture(scope="module")
def groups(trunks):
    return generate_branches(SPEC, trunks, list(range(len(trunks))), BranchConfig(points_per_episode=3, chunks=4, max_hold=4), seed=0)


def test_restored_state_replays_the_trunk_exactly(trunks):
    ep = trunks[0]
    b = 2
    sim = Simulator(SPEC, ep.variant)
    sim.reset(seed=0)
    sim.set_state(ep.states[b * F - 1])
    n = min(3, len(ep) // F - b)
    out = _play(sim, SPEC, [ep.actions[(b + i) * F] for i in range(n)])
    assert np.array_equal(out["frames"], ep.frames[b * F:(b + n) * F])
    np.testing.assert_allclose(out["states"], ep.states[b * F:(b + n) * F], atol=1e-5)


def test_pairs_share_the_state_and_differ_only_in_the_held_push(groups):
    assert groups
    for g in groups:
        left, right, rand = (g["branches"][k] for k in KINDS)
        h = g["hold"]
        assert (left["actions"][:h * F] == 0).all() and (right["actions"][:h * F] == 1).all()
        np.testing.assert_array_equal(left["actions"][h * F:], right["actions"][h * F:])  # the shared tail
        # pushed apart from one state: the pole leans the other way under a right push than under a left one
        assert right["states"][F * min(h, 3) - 1, 2] < left["states"][F * min(h, 3) - 1, 2]
        assert len(rand["frames"]) == len(left["frames"]) == 4 * F


def test_branch_latents_continue_the_trunk_stream(trunks, vae, groups, tmp_path):
    """Context latents from the trunk + branch latents == encoding trunk prefix and branch as one episode."""
    bank = encode_branches(groups, trunks, vae)
    bank.save(tmp_path / "b.safetensors")
    bank = BranchCache.load(tmp_path / "b.safetensors")
    assert len(bank) == 3 * len(groups) and bank.num_groups == len(groups)
    cache = build_latent_cache(trunks, vae_encode_fn(vae))
    sampler = BranchSampler(bank, cache)
    enc = vae_encode_fn(vae)
    left, right, ks = sampler.pairs(4, 4, np.random.default_rng(0))
    for c, k in zip(left + right, ks + ks):
        g = next(g for g in groups if g["trunk"] == c["episode"] and g["point"] == c["start"] + k)
        frames = np.concatenate([trunks[c["episode"]].frames[:g["point"] * F], g["branches"][c["branch"]]["frames"]])
        whole = enc(frames)
        np.testing.assert_allclose(c["latents"], whole[c["start"]:c["start"] + 4], atol=1e-4)
        assert len(c["actions"]) == 4 * F
    for l, r, k in zip(left, right, ks):
        np.testing.assert_array_equal(l["latents"][:k], r["latents"][:k])  # the shared context
        assert (l["actions"][k * F:(k + 1) * F] == 0).all() and (r["actions"][k * F:(k + 1) * F] == 1).all()


def test_branches_decorrelate_actions_from_the_lean(trunks, vae, groups):
    """Random branch continuations carry actions uncorrelated with the lean, unlike the balancing controller."""
    bank = encode_branches(groups, trunks, vae)
    rand = [{"actions": np.concatenate([np.zeros(F, np.int64), bank.arrays[i]["actions"]]),
             "action_mask": np.concatenate([np.zeros(F, bool), bank.arrays[i]["action_mask"]]),
             "states": np.concatenate([np.zeros((F, 4), np.float32), bank.arrays[i]["states"]])}
            for i in range(len(bank)) if KINDS[int(bank.meta[i, 3])] == "random"]
    r = action_state_correlation(rand, F)
    assert r["decisions"] > 0 and abs(r["pole_angle"]) < 0.6
    chunk_action = np.arange(40) // F % 2  # alternating pushes, one per chunk
    lean = np.roll(chunk_action - 0.5, -1)  # the lean before a chunk predicts its action
    balance = [{"actions": chunk_action, "action_mask": np.ones(40, bool),
                "states": np.stack([np.zeros(40), np.zeros(40), lean, np.zeros(40)], 1)}]
    assert action_state_correlation(balance, F)["pole_angle"] > 0.9


def test_pair_difference_loss_is_zero_only_for_the_right_difference():
    torch.manual_seed(0)
    ta, tb = torch.randn(2, 3, 4, 2, 2), torch.randn(2, 3, 4, 2, 2)
    mask = torch.ones(2, 4, dtype=torch.bool)
    assert pair_difference_loss(ta + 1.0, tb + 1.0, ta, tb, mask).item() == pytest.approx(0.0, abs=1e-6)  # a shared offset is free
    assert pair_difference_loss(ta, ta, ta, tb, mask).item() > 0.1  # ignoring the action difference is not
    mask[:, 2:] = False
    only = pair_difference_loss(ta.clone().index_fill_(2, torch.tensor([2, 3]), 9.0), tb, ta, tb, mask)
    assert only.item() == pytest.approx(0.0, abs=1e-6)  # masked (context) frames do not count


def test_teacher_batches_mix_plain_single_and_paired_clips(trunks, vae, groups):
    bank = encode_branches(groups, trunks, vae)
    cache = build_latent_cache(trunks, vae_encode_fn(vae))
    cfg = TeacherTrainConfig(batch_size=8, clip_latent_frames=4, pair_fraction=0.5, branch_fraction=0.25)
    clips, ctx, P = sample_training_clips(ClipSampler(cache), BranchSampler(bank, cache), cfg, np.random.default_rng(1))
    assert len(clips) == 8 and P == 2
    assert (ctx[:2] == -1).all() and (ctx[2:] >= 1).all()
    assert [c["branch"] for c in clips[4:6]] == ["left", "left"] and [c["branch"] for c in clips[6:]] == ["right", "right"]
    np.testing.assert_array_equal(ctx[4:6], ctx[6:8])
    with pytest.raises(ValueError, match="pair_fraction"):
        sample_training_clips(ClipSampler(cache), BranchSampler(bank, cache),
                              TeacherTrainConfig(batch_size=4, pair_fraction=1.0, branch_fraction=0.5), np.random.default_rng(0))


def test_teacher_trains_on_pairs_and_warm_starts(trunks, vae, groups, tmp_path):
    """A warm start begins at the given weights (lr 0 keeps them), and pair training logs both loss terms."""
    from distill.batches import PromptBank
    from distill.train_teacher import train_teacher
    from models.actions import ActionCodec, space_to_dict
    from models.dit import DiT, DiTConfig
    from models.io import read_log

    bank = PromptBank(trunks.prompts, [torch.randn(3, 384) for _ in trunks.prompts], [torch.ones(3, dtype=torch.bool) for _ in trunks.prompts])
    cache = build_latent_cache(trunks, vae_encode_fn(vae))
    v = vae.config
    dit_cfg = DiTConfig.from_size("tiny", latent_channels=v.latent_channels, latent_height=v.latent_height, latent_width=v.latent_width,
                                  action_space=space_to_dict(SPEC.make_action_space()))
    init = DiT(dit_cfg)
    with torch.no_grad():
        for p in init.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    codec = ActionCodec(space_to_dict(SPEC.make_action_space()))
    cfg = TeacherTrainConfig(steps=3, batch_size=4, clip_latent_frames=4, lr=0.0, warmup_steps=1, save_every=3, log_every=1,
                             pair_fraction=0.5, dit=dit_cfg)
    train_teacher(ClipSampler(cache), codec, bank, cfg, tmp_path / "teacher", init_from=init,
                  branches=BranchSampler(encode_branches(groups, trunks, vae), cache))
    out = DiT.from_pretrained(tmp_path / "teacher" / "model")
    for a, b in zip(out.state_dict().values(), init.state_dict().values()):
        torch.testing.assert_close(a, b)
    rows = list(read_log(tmp_path / "teacher" / "log.jsonl"))
    assert all("losses/teacher_pair" in r and r["losses/teacher_pair"] > 0 for r in rows)


def test_pairs_can_favour_the_longest_context(trunks, vae, groups):
    bank = encode_branches(groups, trunks, vae)
    cache = build_latent_cache(trunks, vae_encode_fn(vae))
    _, _, ks = BranchSampler(bank, cache, max_context=4, p_max_context=1.0).pairs(12, 4, np.random.default_rng(0))
    bs = {g["point"] for g in groups}
    assert set(ks) <= {min(4, b, 3) for b in bs} and max(ks) == 3  # the longest the 4-frame clip and the point allow
    _, _, ks0 = BranchSampler(bank, cache, max_context=4).pairs(40, 4, np.random.default_rng(0))
    assert len(set(ks0)) > 1


def test_pairs_at_context_share_exactly_k_context_frames(trunks, vae, groups):
    bank = encode_branches(groups, trunks, vae)
    cache = build_latent_cache(trunks, vae_encode_fn(vae))
    sampler = BranchSampler(bank, cache)
    k = max(g["point"] for g in groups)
    left, right = sampler.pairs_at_context(5, k, k + 2, np.random.default_rng(0))
    assert len(left) == len(right) == 5
    for a, b in zip(left, right):
        assert a["latents"].shape[0] == b["latents"].shape[0] == k + 2 and a["start"] == b["start"]
        np.testing.assert_array_equal(a["latents"][:k], b["latents"][:k])
        np.testing.assert_array_equal(a["states"][:k * F], b["states"][:k * F])
        assert a["branch"] == "left" and b["branch"] == "right"
    with pytest.raises(ValueError, match="no branch point"):
        sampler.pairs_at_context(2, k + 1, k + 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="k: expected"):
        sampler.pairs_at_context(2, 3, 3, np.random.default_rng(0))
