"""The state head (simulator state read off real latents) and the teacher's auxiliary state-readout loss."""
import numpy as np
import pytest
import torch

from distill.batches import ClipSampler
from distill.collect import CollectConfig, collect
from distill.dataset import EpisodeDataset, build_latent_cache
from distill.pipeline import vae_encode_fn
from distill.train_heads import StateHeadTrainConfig, state_head_batch, state_head_error, train_state_head
from distill.train_teacher import state_readout_loss
from models.heads import StateHead, StateHeadConfig
from models.vae import CausalVAE, VAEConfig
from tests.helpers import TINY_VAE


def _head(**kw):
    torch.manual_seed(0)
    return StateHead(StateHeadConfig(state_mean=(0.1, 0.0, -0.2, 0.0), state_std=(2.0, 1.0, 0.5, 1.0), **kw))


def test_state_head_shapes_units_and_bad_input():
    head = _head()
    z = torch.randn(3, 8, 5, 8, 12)
    assert head(z).shape == (3, 20, 4)
    s = torch.randn(3, 20, 4)
    torch.testing.assert_close(head.standardise(s) * head.std + head.mean, s)
    torch.testing.assert_close(head.predict(z), head(z) * head.std + head.mean)
    with pytest.raises(ValueError, match="z: expected latents"):
        head(torch.randn(3, 5, 8, 12))
    with pytest.raises(ValueError, match="state_mean and state_std"):
        StateHead(StateHeadConfig(state_dim=2))


def test_state_readout_loss_reaches_the_prediction_only_where_masked_in():
    head = _head().requires_grad_(False)
    x0 = torch.randn(2, 8, 3, 8, 12, requires_grad=True)
    states = torch.randn(2, 12, 4)
    mask = torch.tensor([[False, True, True], [False, False, True]])
    loss = state_readout_loss(head, x0, states, mask)
    loss.backward()
    g = x0.grad.abs().sum(dim=(1, 3, 4))  # (B, T)
    assert (g[mask] > 0).all() and (g[~mask] == 0).all()
    # the loss is the mean of the masked frames' errors
    err = (head(x0) - head.standardise(states)).pow(2).mean(-1).view(2, 3, 4).mean(-1)
    torch.testing.assert_close(loss, err[mask].mean())
    # states read exactly right: zero loss
    exact = head.predict(x0).detach()
    assert state_readout_loss(head, x0, exact, mask).item() < 1e-10
    # dims: only those state dimensions are compared (wrong velocities cost nothing with dims=(0, 2))
    off = exact.clone()
    off[..., [1, 3]] += 5.0
    assert state_readout_loss(head, x0, off, mask, dims=(0, 2)).item() < 1e-10
    assert state_readout_loss(head, x0, off, mask).item() > 1.0


def test_state_head_learns_the_cart_position_from_latents(tiny_latents, tmp_path):
    """Even an untrained VAE's latents carry the cart's position: the head gets well under the spread."""
    data = ClipSampler(tiny_latents)
    cfg = StateHeadTrainConfig(steps=150, batch_size=32, stats_clips=256, lr=3e-3, save_every=150, log_every=50)
    summary = train_state_head(data, cfg, tmp_path / "state_head", heldout=data)
    head = StateHead.from_pretrained(tmp_path / "state_head" / "model")
    err = state_head_error(head, data.sample(128, 1, np.random.default_rng(3)))
    _, s = state_head_batch(data.sample(512, 1, np.random.default_rng(4)))
    assert err[0] < 0.5 * s[..., 0].std().item(), (err, s[..., 0].std())
    assert len(summary["heldout_rmse"]) == 4
    assert train_state_head(data, cfg, tmp_path / "state_head") == {}  # done: not retrained


def test_teacher_adds_the_state_loss_and_needs_a_head(tiny_latents, tmp_path):
    from causvid_env.worlds import get_world
    from distill.batches import PromptBank
    from distill.train_teacher import TeacherTrainConfig, train_teacher
    from models.actions import ActionCodec, space_to_dict
    from models.dit import DiTConfig
    from models.io import read_log

    spec = get_world("cartpole")
    prompts = sorted({s["prompt"] for s in tiny_latents.strings})
    bank = PromptBank(prompts, [torch.randn(3, 384) for _ in prompts], [torch.ones(3, dtype=torch.bool) for _ in prompts])
    space = space_to_dict(spec.make_action_space())
    dit_cfg = DiTConfig.from_size("tiny", latent_channels=8, latent_height=8, latent_width=12, action_space=space)
    cfg = TeacherTrainConfig(steps=3, batch_size=4, clip_latent_frames=3, warmup_steps=1, save_every=3, log_every=1,
                             state_weight=0.5, state_max_t=1.0, dit=dit_cfg)
    with pytest.raises(ValueError, match="state_weight"):
        train_teacher(ClipSampler(tiny_latents), ActionCodec(space), bank, cfg, tmp_path / "t0")
    train_teacher(ClipSampler(tiny_latents), ActionCodec(space), bank, cfg, tmp_path / "t1", state_head=_head())
    rows = list(read_log(tmp_path / "t1" / "log.jsonl"))
    assert rows and all(r["losses/teacher_state"] > 0 and r["losses/teacher"] > r["losses/teacher_fm"] for r in rows)
    # frames noised past teacher.state_max_t are left out of the state loss (none left: the term is zero)
    import dataclasses
    train_teacher(ClipSampler(tiny_latents), ActionCodec(space), bank, dataclasses.replace(cfg, state_max_t=-1.0), tmp_path / "t2",
                  state_head=_head())
    assert all(r["losses/teacher_state"] == 0.0 for r in read_log(tmp_path / "t2" / "log.jsonl"))
