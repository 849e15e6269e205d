"""The latent-space action-effect ratio on contrast ODE pairs (evaluation/action_effect.py)."""
import copy

import pytest
import torch

from evaluation.action_effect import effect_ratios
from models.schedule import FlowSchedule
from tests.test_ode_pairs import _pairs, _perturb, _setup


def test_an_action_blind_model_scores_zero_at_the_first_step_and_the_teacher_keeps_part_of_its_effect(tiny_latents, tmp_path):
    teacher, codec, bank = _setup(tiny_latents)
    _perturb(teacher)
    shards = _pairs(teacher, codec, bank, tiny_latents, tmp_path / "p", num_pairs=0, batch_size=4, clip_latent_frames=4, num_steps=4,
                    context_frames=1, max_context_frames=2, p_no_context=0.0, num_contrast_pairs=8)
    blind = copy.deepcopy(teacher)
    with torch.no_grad():
        for name, p in blind.named_parameters():
            if "frame_embed" in name and name.endswith("weight"):
                p.zero_()  # every action embeds alike
    mean_read = lambda z: torch.stack([z.mean(dim=(1, 3, 4)), z[:, 0].amax(dim=(2, 3))], dim=-1)  # (B, T, 2)
    for causal in (True, False):
        r = effect_ratios(blind, shards, bank, FlowSchedule(), causal=causal, readout=mean_read, readout_names=("mean", "max"))
        read0 = [x for x in r["read_level_chunk0"] if x["level"] == 0]
        assert [x["quantity"] for x in read0] == ["mean", "max"] and all(abs(x["ratio"]) < 0.05 for x in read0)
        # the first step, the first chunk: the inputs of the two rows differ only by the action (and by the teacher's
        # step from t = 1 to 0.9997), so a model blind to it has no effect; later the noisy states and (causal) the
        # clean copy of earlier chunks carry the teacher's effect, which even a blind model passes on in part
        first = r["level_chunk0"][0]
        assert first["ratio"] == pytest.approx(0.0, abs=0.02) and first["miss"] == pytest.approx(1.0, abs=0.05)
        assert [x["index"] for x in r["level"]] == [0, 1, 2, 3] and [x["index"] for x in r["chunk"]] == [0, 1, 2]
    own = effect_ratios(teacher, shards, bank, FlowSchedule(), causal=False)
    assert own["all"]["ratio"] > 0.2 and own["all"]["miss"] < 1.0
    assert own["level"][-1]["miss"] < own["level"][0]["miss"]  # nearer the end of its ODE, nearer its result


def test_effect_ratios_ask_for_contrast_shards(tiny_latents, tmp_path):
    teacher, codec, bank = _setup(tiny_latents)
    shards = _pairs(teacher, codec, bank, tiny_latents, tmp_path / "p", num_pairs=2, batch_size=2, clip_latent_frames=3, num_steps=2)
    with pytest.raises(ValueError, match="num_contrast_pairs"):
        effect_ratios(teacher, shards, bank, FlowSchedule(), causal=True)
