"""The balancing controller that drives DMD's rollouts from the student's own frames: it decides from
the state head's reading, writes only its rows, and the closed-loop rollout is exactly the open-loop
one under the script it recorded."""
import copy
import json

import numpy as np
import pytest
import torch

from distill.batches import PromptBank, make_batch
from distill.dmd import DMDConfig, self_forcing_rollout, train_dmd
from distill.latent_controller import BALANCING_GAINS, LatentBalancer
from models.actions import ActionCodec
from models.samplers import Cond
from models.schedule import FlowSchedule
from tests.test_dit import random_model
from tests.test_self_forcing import _ClipsWithStates, _FixedClips, _sensitive_state_head


def _setup():
    m = random_model(1)
    head = _sensitive_state_head()
    codec = ActionCodec(m.config.action_space)
    bank = PromptBank(["p"], [torch.randn(3, 384)], [torch.ones(3, dtype=torch.bool)])
    return m, head, codec, bank


def test_balancer_pushes_by_the_state_feedback_on_the_heads_reading():
    m, head, codec, bank = _setup()
    z = torch.randn(6, 8, 1, 8, 12)
    state = head.predict(z)[:, -1].double().numpy()
    want = (state @ np.asarray(BALANCING_GAINS) > 0).astype(int)
    got = LatentBalancer(head, codec, epsilon=0.0).actions(z, np.random.default_rng(0))
    assert np.array_equal(got, want)
    assert 0 < want.sum() < len(want)  # both pushes occur: the test can tell them apart
    flipped = LatentBalancer(head, codec, gains=[-g for g in BALANCING_GAINS], epsilon=0.0).actions(z, np.random.default_rng(0))
    assert np.array_equal(flipped, 1 - want)
    explore = np.concatenate([LatentBalancer(head, codec, epsilon=1.0).actions(z, np.random.default_rng(s)) for s in range(20)])
    assert 0.3 < explore.mean() < 0.7  # all random pushes
    with pytest.raises(ValueError, match="gains"):
        LatentBalancer(head, codec, gains=(1.0, 2.0))
    with pytest.raises(ValueError, match="epsilon"):
        LatentBalancer(head, codec, epsilon=1.5)


def test_closed_loop_rollout_equals_the_open_loop_one_under_the_recorded_script():
    """The hook writes the controller's pushes for its rows only; rerunning the rollout with the
    recorded script (same noise) generates the same frames: the generator was conditioned on exactly
    the actions the scores are then given."""
    m, head, codec, bank = _setup()
    clips = _ClipsWithStates(head).sample(2, 6, None, True)
    batch = make_batch(clips, codec, np.random.default_rng(0))
    rows = np.array([True, False])
    ts = FlowSchedule().student_timesteps()
    hook, (feats, null) = LatentBalancer(head, codec, epsilon=0.0).hook(batch.action_feats, batch.action_null, rows, 4,
                                                                       np.random.default_rng(1))
    torch.manual_seed(0)
    with torch.no_grad():
        closed = self_forcing_rollout(m, batch.latents, 1, batch.cond(m, bank), ts, 3, 0.0, np.random.default_rng(2), actions_hook=hook)
    assert torch.equal(feats[1], batch.action_feats[1]) and torch.equal(null[1], batch.action_null[1])
    assert torch.equal(feats[0, :4], batch.action_feats[0, :4])  # the context's actions are the clip's
    assert not null[0, 4:].any()
    cond = batch.cond(m, bank)
    torch.manual_seed(0)
    with torch.no_grad():
        open_loop = self_forcing_rollout(m, batch.latents, 1, Cond(feats, null, cond.text, cond.null_text), ts, 3, 0.0,
                                         np.random.default_rng(2))
    assert torch.allclose(closed, open_loop, atol=1e-6)
    # the pushes are the controller's reading of the frame before each chunk
    want = LatentBalancer(head, codec, epsilon=0.0).actions(closed[:1, :, 2:3], np.random.default_rng(0))[0]
    assert torch.allclose(feats[0, 12], torch.from_numpy(codec.to_features(np.asarray([want]))[0]).float())


def test_dmd_with_controller_rollouts_trains_skips_their_data_term_and_checks_its_setting(tmp_path):
    m, head, codec, bank = _setup()
    ds = _ClipsWithStates(head)
    cfg = DMDConfig(steps=2, batch_size=2, rollout="self_forcing", rollout_latent_frames=4, window_frames=3, score_frames=3,
                    max_context_frames=1, p_from_start=1.0, ttur=1, data_weight=1.0, p_controller_actions=1.0, save_every=2,
                    log_every=1)
    train_dmd(copy.deepcopy(m), copy.deepcopy(m), ds, codec, bank, FlowSchedule(), cfg, tmp_path / "dmd", state_head=head)
    rows = [json.loads(x) for x in (tmp_path / "dmd" / "log.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "losses/data" in r]
    assert logged and all(r["charts/controlled_rollouts"] == 1.0 and r["losses/data"] == 0.0 for r in logged)
    assert all(np.isfinite(r["losses/dmd"]) for r in logged)
    with pytest.raises(ValueError, match="dmd.p_controller_actions > 0 needs a trained state head"):
        train_dmd(m, m, _FixedClips(), codec, bank, FlowSchedule(), DMDConfig(p_controller_actions=0.5), tmp_path / "bad")
    with pytest.raises(ValueError, match="p_controller_actions"):
        train_dmd(m, m, ds, codec, bank, FlowSchedule(), DMDConfig(p_controller_actions=1.5), tmp_path / "bad2", state_head=head)
