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
