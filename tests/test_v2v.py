"""Streaming video-to-video (causvid_env.v2v) on the tiny random checkpoint, and the appearance
measurements its benchmark uses (on real renders)."""
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
torch.set_num_threads(1)

from causvid_env.v2v import StreamingRestyler  # noqa: E402
from causvid_env.worlds import get_world  # noqa: E402

RED = "a long red pole on a black cart under low gravity"
BLUE = "a short blue pole on a black cart pushed with strong force"
F, H, W = 4, 64, 96


@pytest.fixture(scope="module")
def episode():
    """A short real episode: 3 chunks after the still start chunk, with its actions."""
    from evaluation.rollouts import rollout_twin

    ep = rollout_twin("cartpole", 0, "held_random", max_seconds=0.24)
    return ep.frames[:16], ep.actions[:16], ep.states[:16]


def restyler(ckpt, **kw):
    kw = {"prompt": RED, "strength": 0.75, "seed": 3, **kw}
    return StreamingRestyler(ckpt, **kw)


def chunks(frames):
    return [frames[i:i + F] for i in range(0, len(frames), F)]


def test_output_shape_dtype_and_strength_levels(tiny_ckpt, episode):
    frames, actions, _ = episode
    r = restyler(tiny_ckpt)
    out = r.feed(frames[:F])
    assert out.shape == (F, H, W, 3) and out.dtype == np.uint8
    assert r.feed(frames[F:2 * F], actions=actions[F:2 * F]).shape == (F, H, W, 3)
    assert r.feed(frames[2 * F:3 * F], actions=1).shape == (F, H, W, 3)  # one action held for the chunk
    assert r.chunks == 3 and r.last_latency_s > 0 and r.context_seconds() > 0
    ts = r.timesteps.tolist()
    for strength, step in ((1.0, 0), (0.9, 1), (0.75, 2), (0.5, 3), (0.05, 3)):
        r.strength = strength
        assert r.start_step == step and r.steps == 4 - step and r.timestep == pytest.approx(ts[step])
    assert abs(r.timestep - 0.05) == min(abs(t - 0.05) for t in ts)  # the level nearest the strength


def test_streaming_equals_one_shot_clip(tiny_ckpt, episode):
    """Chunk by chunk (streaming VAE, one chunk per call) == one call over the whole clip (one VAE
    encode of all frames, one decode) with the same seed: equal up to float rounding in uint8."""
    frames, actions, _ = episode
    for acts in (None, actions[:12]):  # the null action, then the real actions
        a, b = restyler(tiny_ckpt), restyler(tiny_ckpt)
        streamed = np.concatenate([a.feed(c, actions=None if acts is None else acts[k * F:(k + 1) * F])
                                   for k, c in enumerate(chunks(frames[:12]))])
        one_shot = b.restyle_clip(frames[:12], actions=acts)
        assert one_shot.shape == (12, H, W, 3) and one_shot.dtype == np.uint8
        assert np.abs(one_shot.astype(int) - streamed).max() <= 1 and (one_shot == streamed).mean() > 0.99
        # both streams go on identically after the clip
        assert np.abs(a.feed(frames[12:16]).astype(int) - b.feed(frames[12:16])).max() <= 1
    a.reset()  # a reset stream repeats exactly
    again = np.concatenate([a.feed(c, actions=actions[k * F:(k + 1) * F]) for k, c in enumerate(chunks(frames[:12]))])
    assert np.array_equal(again, streamed)


@torch.no_grad()
def test_cache_path_equals_recomputing_the_context(tiny_ckpt, episode):
    """Independent reference: encode the whole clip, and denoise each chunk with the full
    block-causal forward over [restyled chunks so far | the noisy chunk] (no KV cache)."""
    from models.masks import block_causal_mask
    from models.samplers import Cond
    from models.vae import frames_to_tensor, tensor_to_frames

    frames = episode[0][:12]
    r = restyler(tiny_ckpt, strength=0.9)
    streamed = np.concatenate([r.feed(c) for c in chunks(frames)])

    m, ref = r.model, restyler(tiny_ckpt, strength=0.9)
    student, g = m.student, torch.Generator().manual_seed(3)
    ts = ref.timesteps[ref.start_step:]
    z = m.vae.encode(frames_to_tensor(frames[None]))  # (1, C, 3, h, w): the whole clip at once
    text = ref._text_cond()
    done = []
    for k in range(z.shape[2]):
        shape = z[:, :, k:k + 1].shape
        eps = torch.randn(shape, generator=g)
        renoise = [torch.randn(shape, generator=g) for _ in range(len(ts) - 1)]
        x = (1 - ts[0]) * z[:, :, k:k + 1] + ts[0] * eps
        for i, t in enumerate(ts):
            seq = torch.cat(done + [x], 2)
            tt = torch.tensor([[0.0] * k + [float(t)]])
            n = F * (k + 1)
            cond = Cond(torch.zeros(1, n, 2), torch.ones(1, n, dtype=torch.bool), text)
            v = student(seq, tt, cond.action_feats, cond.action_null, text, frame_mask=block_causal_mask(k + 1, 1))[:, :, -1:]
            x0 = x - t * v
            if i + 1 < len(ts):
                x = (1 - ts[i + 1]) * x0 + ts[i + 1] * renoise[i]
        done.append(x0)
    recomputed = tensor_to_frames(m.vae.decode(torch.cat(done, 2)))[0]
    assert np.abs(recomputed.astype(int) - streamed).max() <= 1


def test_prompt_switch_actions_and_reset_change_what_it_shows(tiny_ckpt, episode):
    frames, actions, _ = episode
    a, b = restyler(tiny_ckpt), restyler(tiny_ckpt)
    for c in chunks(frames[:8]):
        assert np.array_equal(a.feed(c), b.feed(c))
    b.set_prompt(BLUE)  # mid-stream: from the next chunk on
    assert b.prompt == BLUE
    assert not np.array_equal(a.feed(frames[8:12]), b.feed(frames[8:12]))
    c, d = restyler(tiny_ckpt), restyler(tiny_ckpt)
    assert not np.array_equal(c.feed(frames[:4], actions=0), d.feed(frames[:4], actions=1))
    e = restyler(tiny_ckpt, prompt=None)  # the null prompt needs no text encoder
    assert e.feed(frames[:4]).shape == (F, H, W, 3) and e.prompt is None
    c.reset(seed=5)
    d.reset(seed=6)
    assert not np.array_equal(c.feed(frames[:4]), d.feed(frames[:4]))


def test_bad_inputs_are_rejected_clearly(tiny_ckpt, episode):
    frames = episode[0]
    r = restyler(tiny_ckpt)
    with pytest.raises(ValueError, match="frames: expected one chunk of 4 frames"):
        r.feed(frames[:3])
    with pytest.raises(ValueError, match="frames"):
        r.feed(frames[:4, :32])
    with pytest.raises(ValueError, match="frames"):
        r.feed(frames[0])
    with pytest.raises(TypeError, match="frames: expected dtype uint8"):
        r.feed(frames[:4].astype(np.float32) / 255)
    with pytest.raises(TypeError, match="frames"):
        r.feed(frames[:4].tolist())
    with pytest.raises(ValueError, match="action"):
        r.feed(frames[:4], actions=2)
    with pytest.raises(ValueError, match="action"):
        r.feed(frames[:4], actions=[0, 1])
    with pytest.raises(ValueError, match="frames: expected a clip"):
        r.restyle_clip(frames[:6])
    with pytest.raises(ValueError, match="actions"):
        r.restyle_clip(frames[:8], actions=np.zeros(4, np.int64))
    for bad in (0, 0.0, -0.5, 1.5, float("nan")):
        with pytest.raises(ValueError, match="strength"):
            restyler(tiny_ckpt, strength=bad)
        with pytest.raises(ValueError, match="strength"):
            r.strength = bad
    for bad in ("0.5", True, None):
        with pytest.raises(TypeError, match="strength"):
            restyler(tiny_ckpt, strength=bad)
    with pytest.raises(ValueError, match="prompt"):
        r.set_prompt("   ")
    with pytest.raises(ValueError, match="world"):
        StreamingRestyler(tiny_ckpt, world="pendulum")
    with pytest.raises(ValueError, match="window_seconds"):
        restyler(tiny_ckpt, window_seconds=0)
    assert r.chunks == 0  # nothing above reached the model


def test_memory_is_flat_over_a_long_stream(tiny_ckpt, episode):
    frames = episode[0]
    window_seconds = 3 * F / get_world("cartpole").fps  # 3 latent frames of context
    r = restyler(tiny_ckpt, strength=0.5, window_seconds=window_seconds)
    k_ptr, mem0 = r.cache.k.data_ptr(), r.memory_bytes()
    contexts = []
    for i in range(12):
        r.feed(frames[(i % 4) * F:(i % 4 + 1) * F])
        contexts.append(r.context_seconds())
        assert r.memory_bytes() == mem0
    assert r.cache.k.data_ptr() == k_ptr  # the preallocated ring is written in place, never regrown
    assert max(contexts) == pytest.approx(window_seconds) and contexts[-1] == pytest.approx(window_seconds)


def test_appearance_measures_read_real_renders():
    from causvid_env.appearance import (colour_error_deg, find_layout, nearest_colour, part_colours,
                                        pole_length_px, render_at_states)
    from evaluation.rollouts import rollout_twin

    world = get_world("cartpole")
    ep = rollout_twin(world, 1, "held_random", max_seconds=0.4)
    layout = find_layout(ep.frames[0])
    poles = {str(c): c for c in {part_colours(world, v.name)["pole"] for v in world.variants}}
    lengths = {}
    for v in world.variants:
        frames = render_at_states(world, v.name, ep.states)
        colours = part_colours(world, v.name)
        assert np.nanmax(colour_error_deg(frames, layout, "pole", colours["pole"])) < 1.0
        assert np.nanmax(colour_error_deg(frames, layout, "cart", colours["cart"])) < 1.0
        assert (nearest_colour(frames, layout, "pole", poles) == str(colours["pole"])).all()
        lengths[v.name] = np.nanmean(pole_length_px(frames, layout))
    assert np.array_equal(render_at_states(world, None, ep.states), ep.frames)  # the default variant is the input
    assert np.nanmean(colour_error_deg(ep.frames, layout, "pole", part_colours(world, "short_blue_strong_push")["pole"])) > 30
    assert lengths["short_blue_strong_push"] < lengths["default"] < lengths["long_teal_orange_cart"] < lengths["long_red_low_gravity"]



def test_viewer_restyle_mode_headless(tiny_ckpt):
    from causvid_env.viewer.app import run

    app = run(["--checkpoint", str(tiny_ckpt), "--headless", "--seed", "0", "--scale", "1",
               "--script", f"Y,T:{RED},right*2,left"])
    c = app.controller
    assert c.restyle_mode and c.twin_mode
    assert c.restyler.prompt == RED and c.prompt == RED
    assert c.twin_variant == get_world("cartpole").default_variant  # the input keeps its own look
    assert c.stats.steps == 3 and c.restyler.chunks == 4  # the reset chunk + 3 steps
    dream, real = app.current
    assert dream.shape == real.shape == (H, W, 3)
    assert app.final_image.shape == (H, 2 * W, 3)


def _example(name):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_example_and_benchmark_smoke(tiny_ckpt, tmp_path):
    import imageio.v2 as imageio

    res = _example("restyle_episode").main(["--checkpoint", str(tiny_ckpt), "--seconds", "0.16", "--policy", "balance",
                                            "--variants", "default,long_red_low_gravity", "--out", str(tmp_path / "r")])
    reader = imageio.get_reader(res["video"])
    assert reader.count_frames() == res["frames"] == 12
    assert reader.get_data(0).shape[1] > 3 * 2 * W  # input + 2 variants side by side, upscaled
    reader.close()
    bench = _example("v2v_benchmark").main(["--checkpoint", str(tiny_ckpt), "--quick", "--strengths", "0.5,1.0",
                                            "--out", str(tmp_path / "v2v.json")])
    assert set(bench["motion"]) >= {"input (probe floor)", "ideal restyle", "still first frame", "strength 0.5", "strength 1"}
    assert bench["speed"]["strength 0.5"]["denoising_steps"] == 1 and bench["speed"]["strength 1"]["denoising_steps"] == 4
    assert not (tmp_path / "v2v.json").exists()  # --quick writes nothing


def test_long_prompt_and_bad_device_are_rejected(tiny_ckpt):
    r = restyler(tiny_ckpt)
    with pytest.raises(ValueError, match="prompt: the prompt is .* tokens long"):
        r.set_prompt("a long red pole " * 12)
    assert r.prompt == RED
    with pytest.raises(ValueError, match="device"):
        restyler(tiny_ckpt, device="nonsense")
