"""The product surface: CausVidEnv / CausVidVectorEnv contracts (tiny random checkpoint)."""
import gc
import json
import warnings

import gymnasium as gym
import numpy as np
import torch
import psutil
import pytest
from gymnasium.utils.env_checker import check_env

import causvid_env  # noqa: F401  (registers the ids)
from causvid_env.checkpoint import default_checkpoint_dir
from causvid_env.env import CausVidEnv, StepBeforeResetError
from causvid_env.vector_env import CausVidVectorEnv
from causvid_env.worlds import get_world


def rollout(env, actions, seed=0, options=None):
    obs, _ = env.reset(seed=seed, options=options)
    frames = [obs]
    for a in actions:
        obs, *_ = env.step(a)
        frames.append(obs)
    return np.stack(frames)


@pytest.mark.parametrize("render_mode", [None, "rgb_array"])
@pytest.mark.filterwarnings("error::UserWarning")
def test_check_env_on_registered_env(tiny_ckpt, render_mode):
    env = gym.make("causvid/CartPole-v0", checkpoint=str(tiny_ckpt), render_mode=render_mode)
    check_env(env.unwrapped, skip_render_check=render_mode is None)
    env.close()


@pytest.mark.skipif(not (default_checkpoint_dir("cartpole") / "checkpoint.json").is_file(), reason="no checkpoint shipped")
@pytest.mark.filterwarnings("error::UserWarning")
def test_check_env_passes_on_the_default_env():
    """What a user runs first: the registered id with no arguments (the shipped checkpoint)."""
    env = gym.make("causvid/CartPole-v0")
    check_env(env.unwrapped)
    _, info = env.reset(seed=0)
    assert "latency_s" not in info  # wall time is opt-in (timing_info=True): info stays reproducible
    env.close()


def test_timing_info_is_opt_in(tiny_ckpt):
    _, info = CausVidEnv(checkpoint=tiny_ckpt).reset(seed=0)
    assert "latency_s" not in info
    env = CausVidEnv(checkpoint=tiny_ckpt, timing_info=True)
    env.reset(seed=0)
    *_, info = env.step(0)
    assert info["latency_s"] > 0


def test_human_render_headless(tiny_ckpt, monkeypatch):
    import pygame

    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    env = CausVidEnv(checkpoint=tiny_ckpt, render_mode="human", render_scale=2)
    env.reset(seed=0)
    obs, *_ = env.step(1)
    screen = pygame.display.get_surface()
    assert screen.get_size() == (96 * 2, 64 * 2)
    shown = pygame.surfarray.array3d(screen).transpose(1, 0, 2)  # (H, W, 3): the chunk's last frame, 2x nearest
    assert np.array_equal(shown, np.repeat(np.repeat(obs[-1], 2, axis=0), 2, axis=1))
    env.close()
    assert not pygame.display.get_init()


def test_seeded_determinism_and_actions_matter(tiny_ckpt):
    env = CausVidEnv(checkpoint=tiny_ckpt)
    a = rollout(env, [1, 1, 0], seed=3)
    b = rollout(env, [1, 1, 0], seed=3)
    c = rollout(env, [0, 0, 1], seed=3)
    assert np.array_equal(a, b)
    assert np.array_equal(a[0], c[0]) and not np.array_equal(a[1:], c[1:])


def test_bad_inputs_raise_clear_errors(tiny_ckpt, tmp_path):
    env = CausVidEnv(checkpoint=tiny_ckpt)
    with pytest.raises(StepBeforeResetError, match="reset"):
        env.step(0)
    assert issubclass(StepBeforeResetError, ValueError)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(2)  # out of range
    with pytest.raises(ValueError, match="action"):
        env.step(0.5)  # wrong type for Discrete
    with pytest.raises(ValueError, match="action"):
        env.step([0, 1])  # neither one action nor one per frame
    with pytest.raises(ValueError, match="action_or_prompt"):
        env.step({"prompt": "   "})  # empty prompt
    with pytest.raises(ValueError, match="action_or_prompt"):
        env.step({"act": 1})
    with pytest.raises(ValueError, match="image"):
        env.reset(np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="image"):
        env.reset(np.zeros((10, 10, 2), np.uint8))
    with pytest.raises(ValueError, match="prompt"):
        env.reset("")
    with pytest.raises(ValueError, match="frames"):
        env.reset(options={"frames": np.zeros((3, 64, 96, 3), np.uint8)})
    with pytest.raises(ValueError, match="options"):
        env.reset(options={"colour": 1})
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        CausVidEnv(checkpoint=tmp_path / "missing")
    with pytest.raises(ValueError, match=r"is a file.*pass its directory instead: checkpoint="):
        CausVidEnv(checkpoint=tiny_ckpt / "checkpoint.json")
    run = tmp_path / "run"
    import shutil
    shutil.copytree(tiny_ckpt, run / "checkpoint")
    with pytest.raises(FileNotFoundError, match=r"training run directory; pass its checkpoint subdirectory"):
        CausVidEnv(checkpoint=run)
    with pytest.raises(ValueError, match="world"):
        CausVidEnv(world="pendulum", checkpoint=tiny_ckpt)
    bad = tmp_path / "bad"
    shutil.copytree(tiny_ckpt, bad)
    w = bad / "student" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:200])
    with pytest.raises(ValueError, match="corrupt"):
        CausVidEnv(checkpoint=bad)
    cfg = json.loads((bad / "vae" / "config.json").read_text())
    cfg["latent_channels"] = 4
    (bad / "vae" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError):
        CausVidEnv(checkpoint=bad)


def test_strings_are_not_actions_and_prompts_are_not_cut(tiny_ckpt):
    """step("left") must not silently become a prompt; a prompt too long for the text encoder must
    not silently lose its end."""
    env = CausVidEnv(checkpoint=tiny_ckpt)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"'left' is a key of this world's keymap: pass its action, env.step\(0\)"):
        env.step("left")
    with pytest.raises(ValueError, match=r"\{'prompt': '...'\}"):
        env.step("a short pole on a black cart")
    long = " ".join(["a long red pole on a black cart under low gravity"] * 4)
    with pytest.raises(ValueError, match=r"action_or_prompt\['prompt'\]: the prompt is \d+ tokens long but the text encoder reads at most 32"):
        env.step({"action": 1, "prompt": long})
    with pytest.raises(ValueError, match=r"options\['prompt'\]: the prompt is"):
        env.reset(seed=0, options={"prompt": long})
    with pytest.warns(UserWarning, match="cannot read"):
        env.reset(seed=0, options={"prompt": "x" * 10_000})  # one 'word' MiniLM maps to [UNK]
    for variant in get_world("cartpole").variants + get_world("pendulum").variants:  # every shipped prompt fits
        env.reset(seed=0, options={"prompt": variant.prompt})


@pytest.mark.filterwarnings("error::UserWarning")
def test_images_of_every_common_kind(tiny_ckpt):
    """HxW, HxWx1, HxWx3, HxWx4, PIL, float in [0, 1] and uint16 are the same picture; floats in
    0..255 and other dtypes are refused with a message that says what to pass."""
    from PIL import Image

    env = CausVidEnv(checkpoint=tiny_ckpt)
    grey = np.full((40, 60), 30, np.uint8)
    grey[10:20, 20:40] = 220
    rgb = np.repeat(grey[..., None], 3, axis=2)
    ref, _ = env.reset(seed=0, options={"image": rgb})
    same = [grey, grey[..., None], np.concatenate([rgb, np.full((40, 60, 1), 255, np.uint8)], axis=2),
            Image.fromarray(rgb), Image.fromarray(grey), rgb.astype(np.float32) / 255, rgb.astype(np.uint16) * 257]
    for img in same:
        obs, _ = env.reset(seed=0, options={"image": img})
        assert np.array_equal(obs, ref), type(img)
    with pytest.raises(ValueError, match=r"float image must lie in \[0, 1\].*np.clip\(img, 0, 255\).astype\(np.uint8\)"):
        env.reset(seed=0, options={"image": rgb.astype(np.float32)})
    with pytest.raises(TypeError, match=r"image: unsupported dtype int64.*uint8 in 0..255"):
        env.reset(seed=0, options={"image": rgb.astype(np.int64)})
    with pytest.raises(ValueError, match="NaN"):
        env.reset(seed=0, options={"image": np.full((40, 60, 3), np.nan, np.float32)})
    clip = np.repeat(rgb[None].astype(np.float32) / 255, 8, axis=0)  # clips follow the same rules
    obs, info = env.reset(seed=0, options={"frames": clip})
    assert info["context_seconds"] == pytest.approx(8 / 50)


def test_step_after_termination_warns_unless_run_on(tiny_ckpt):
    env = CausVidEnv(checkpoint=tiny_ckpt, max_episode_steps=2)
    env.reset(seed=0)
    env.step(0)
    *_, trunc, _ = env.step(0)
    assert trunc
    with pytest.warns(UserWarning, match="reset"):
        env.step(0)
    env = CausVidEnv(checkpoint=tiny_ckpt, max_episode_steps=2, run_on=True)  # watched past its end on purpose
    env.reset(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(4):
            env.step(0)


@pytest.mark.filterwarnings("error::UserWarning")
def test_gymnasium_image_wrappers_with_last_frame_obs(tiny_ckpt):
    from gymnasium.wrappers import GrayscaleObservation, ResizeObservation

    env = GrayscaleObservation(gym.make("causvid/CartPole-v0", checkpoint=str(tiny_ckpt), obs_mode="last"))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 96) and obs.dtype == np.uint8 and env.observation_space.contains(obs)
    obs, *_ = env.step(1)
    assert env.observation_space.contains(obs)
    try:
        import cv2  # noqa: F401  (ResizeObservation's dependency, not ours)
    except ImportError:
        with pytest.raises(gym.error.DependencyNotInstalled, match="opencv"):
            ResizeObservation(env, (32, 48))
        return
    small = ResizeObservation(env, (32, 48))
    obs, _ = small.reset(seed=0)
    assert obs.shape == (32, 48) and small.observation_space.contains(small.step(0)[0])


def test_reset_from_image_prompt_and_clip(tiny_ckpt):
    env = CausVidEnv(checkpoint=tiny_ckpt)
    img = np.full((400, 600, 3), 255, np.uint8)
    img[200:220, 250:350] = 0
    o1, info = env.reset(img, seed=1)  # the unwrapped env also takes the image or prompt positionally
    o2, _ = env.reset(options={"image": img}, seed=1)
    assert np.array_equal(o1, o2) and o1.shape == (4, 64, 96, 3)
    o3, info3 = env.reset("a long red pole on a black cart under low gravity", seed=1)
    assert info3["prompt"].startswith("a long red pole")
    clip = np.repeat(img[None], 8, axis=0)
    o4, info4 = env.reset(options={"frames": clip, "actions": np.ones(8, np.int64)}, seed=1)
    assert info4["context_seconds"] == pytest.approx(2 * 4 / 50)


def test_rollout_shorter_than_window_is_identical(tiny_ckpt):
    actions = [1, 0, 0, 1, 1, 0]
    a = rollout(CausVidEnv(checkpoint=tiny_ckpt, window_seconds=0.6), actions)  # 7-8 latent frames of context
    b = rollout(CausVidEnv(checkpoint=tiny_ckpt, window_seconds=100.0), actions)
    # same maths; the only difference is how many masked-out cache slots the attention skips
    d = np.abs(a.astype(int) - b.astype(int))
    assert d.max() <= 1 and d.mean() < 1e-3
    c = rollout(CausVidEnv(checkpoint=tiny_ckpt, window_seconds=0.16), actions)  # 2 latent frames: the window bites
    assert np.abs(a[:3].astype(int) - c[:3].astype(int)).max() <= 1
    assert np.abs(a[4:].astype(int) - c[4:].astype(int)).mean() > 0.5


@pytest.mark.slow
def test_long_rollout_keeps_memory_flat(tiny_ckpt):
    """60 s of generated video (750 chunks) with a 2 s window: cache bounded, RSS flat."""
    env = CausVidEnv(checkpoint=tiny_ckpt, window_seconds=2.0, max_episode_steps=10**6, run_on=True)  # one long dream, ends ignored
    env.reset(seed=0)
    proc = psutil.Process()
    cache_bytes = env.engine.memory_bytes()
    rss = []
    rng = np.random.default_rng(0)
    for i in range(750):
        _, _, term, trunc, info = env.step(int(rng.integers(2)))
        assert info["context_seconds"] <= 2.0 + 1e-9
        if i % 50 == 49:
            gc.collect()
            rss.append(proc.memory_info().rss)
    assert env.engine.memory_bytes() == cache_bytes
    assert info["context_seconds"] == pytest.approx(2.0)
    growth = (rss[-1] - rss[2]) / 2**20  # after warm-up
    assert growth < 20, f"resident memory grew by {growth:.1f} MiB over the rollout"


def test_vector_env_matches_single_envs(tiny_ckpt):
    K, seed = 3, 100
    venv = CausVidVectorEnv(K, checkpoint=tiny_ckpt, max_episode_steps=50)
    assert venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    acts = np.array([[0, 1, 1], [1, 1, 0], [0, 0, 1], [1, 0, 1]])
    vo, _ = venv.reset(seed=seed)
    vobs = [vo]
    for a in acts:
        vobs.append(venv.step(a)[0])
    vobs = np.stack(vobs)  # (T, K, F, H, W, 3)
    for i in range(K):
        single = rollout(CausVidEnv(checkpoint=tiny_ckpt), acts[:, i].tolist(), seed=seed + i)
        diff = np.abs(single.astype(int) - vobs[:, i].astype(int))
        assert diff.max() <= 2 and diff.mean() < 0.01, (i, diff.max(), diff.mean())  # batched vs batch-1 BLAS rounding


def test_vector_env_autoreset_next_step(tiny_ckpt):
    venv = CausVidVectorEnv(2, checkpoint=tiny_ckpt, max_episode_steps=2)
    venv.reset(seed=0)
    venv.step(np.array([0, 1]))
    _, r, term, trunc, _ = venv.step(np.array([0, 1]))
    assert trunc.all()
    obs, r, term, trunc, info = venv.step(np.array([0, 1]))
    assert (r == 0).all() and not term.any() and not trunc.any() and info["episode_reset"].all()
    assert np.allclose(info["context_seconds"], 4 / 50)  # only the new first chunk is in the cache
    with pytest.raises(ValueError, match="actions"):
        venv.step(np.array([0]))


def test_vector_env_reset_seeds_itself_and_refuses_partial_resets(tiny_ckpt):
    venv = CausVidVectorEnv(2, checkpoint=tiny_ckpt)
    venv.reset(seed=5)
    assert venv.np_random_seed == 5  # VectorEnv.reset(seed) ran: the vector env's own generator is seeded
    a = venv.np_random.integers(1000, size=3)
    venv.reset(seed=5, options={"reset_mask": np.array([True, True])})  # an all-True mask is a full reset
    assert np.array_equal(venv.np_random.integers(1000, size=3), a)
    with pytest.raises(ValueError, match=r"reset_mask'\]: partial resets are not supported.*next step\(\)"):
        venv.reset(options={"reset_mask": np.array([True, False])})
    with pytest.raises(ValueError, match="reset_mask"):
        venv.reset(options={"reset_mask": np.array([True])})
    venv.reset(seed=[3, 4])  # per-env seeds leave the vector env's own generator alone
    assert venv.np_random_seed == 5


def test_vector_env_through_make_vec(tiny_ckpt):
    venv = gym.make_vec("causvid/CartPole-v0", num_envs=2, vectorization_mode="vector_entry_point", checkpoint=str(tiny_ckpt))
    obs, _ = venv.reset(seed=0, options={"image": [None, np.zeros((40, 60, 3), np.uint8)], "prompt": "a short pole on a black cart"})
    assert obs.shape == (2, 4, 64, 96, 3)
    assert venv.observation_space.contains(obs)


def test_prompt_switch_changes_only_what_follows(tiny_ckpt):
    env = CausVidEnv(checkpoint=tiny_ckpt)
    base = rollout(env, [1, 0, 1, 1, 0])
    switched = rollout(env, [1, 0, {"action": 1, "prompt": "a long red pole on a black cart under low gravity"}, 1, 0])
    assert np.array_equal(base[:3], switched[:3])
    assert not np.array_equal(base[3:], switched[3:])
    env.reset(seed=0)
    obs, r, *_ , info = env.step({"prompt": "a short pole on a black cart"})  # the null action
    assert info["prompt"] == "a short pole on a black cart" and info["prompt_changed"]


def test_last_frame_obs_decodes_only_that_frame_and_matches_the_chunk(tiny_ckpt):
    """obs_mode="last" decodes one frame per chunk (the engine skips the others) and still shows
    exactly the last frame of the chunk observation, for the env and the vector env."""
    acts = [1, 0, 1]
    chunk = rollout(CausVidEnv(checkpoint=tiny_ckpt), acts, seed=7)  # (T, F, H, W, 3)
    env = CausVidEnv(checkpoint=tiny_ckpt, obs_mode="last")
    assert env.engine.decode_frames == (env.engine.F - 1,)
    last = rollout(env, acts, seed=7)
    assert last.shape == chunk[:, -1].shape
    assert np.abs(last.astype(int) - chunk[:, -1].astype(int)).max() <= 1
    venv = CausVidVectorEnv(2, checkpoint=tiny_ckpt, obs_mode="last", render_mode="rgb_array")
    vo, _ = venv.reset(seed=7)
    assert vo.shape == (2, 64, 96, 3) and venv.single_observation_space.contains(vo[0])
    assert np.abs(vo[0].astype(int) - chunk[0, -1].astype(int)).max() <= 1
    assert all(f.shape == (64, 96, 3) for f in venv.render())


def test_student_dtype_runs_the_student_at_lower_precision(tiny_ckpt):
    """bfloat16 autocast for the student (a GPU option): same shapes and dtypes out, a float32 cache,
    frames close to the float32 dream for the first chunks; a bad dtype is refused by name."""
    acts = [1, 0]
    ref = rollout(CausVidEnv(checkpoint=tiny_ckpt), acts, seed=3)
    env = CausVidEnv(checkpoint=tiny_ckpt, student_dtype=torch.bfloat16)
    low = rollout(env, acts, seed=3)
    assert low.shape == ref.shape and low.dtype == np.uint8 and env.engine.cache.k.dtype == torch.float32
    assert np.abs(low.astype(int) - ref.astype(int)).mean() < 8
    with pytest.raises(ValueError, match="student_dtype"):
        CausVidEnv(checkpoint=tiny_ckpt, student_dtype=torch.int8)


def test_engine_fused_writes_match_separate_writes(tiny_ckpt):
    """The env's engine folds each chunk's cache write into the next chunk's first pass; over resets
    (prompt and image), a prompt change, real latents written for some envs, context noise and a
    sliding window it shows the frames of the reference engine that writes right after each chunk."""
    from causvid_env.checkpoint import load_world_model
    from causvid_env.engine import DreamEngine
    from causvid_env.worlds import get_world

    model, world = load_world_model(tiny_ckpt), get_world("cartpole")
    engines = [DreamEngine(model, world, 3, window_seconds=0.4, context_noise=0.1, fused_writes=f) for f in (True, False)]
    still = engines[0].encode_frames(np.zeros((4, 64, 96, 3), np.uint8) + 200)
    push = np.ones(4, np.int64)
    script = [  # (actions, reset, override, prompt change)
        ([None] * 3, np.ones(3, bool), None, None),
        ([push, None, push], None, None, None),
        ([push] * 3, None, {1: still}, None),
        ([None, push, None], np.array([True, False, False]), None, (2, "a short blue pole on a black cart")),
        ([push] * 3, np.ones(3, bool), {0: still, 1: still, 2: still}, None),
        ([None] * 3, None, None, None),
        ([push] * 3, None, {0: still, 1: still, 2: still}, None),  # real latents for every env, no reset (a clip's next chunk)
    ] + [([push, None, push], None, None, None)] * 6
    for k, (acts, reset, override, prompt) in enumerate(script):
        outs = []
        for eng in engines:
            if prompt is not None:
                eng.set_prompt(*prompt)
            outs.append((eng.chunk(acts, reset=reset, override=override), eng.context_seconds()))
        (a, ca), (b, cb) = outs
        assert np.abs(a.frames.astype(int) - b.frames.astype(int)).max() <= 1, k
        np.testing.assert_allclose(a.frame_rewards, b.frame_rewards, atol=1e-4)
        np.testing.assert_array_equal(ca, cb)
    assert engines[0].cache.k.shape[3] > engines[1].cache.k.shape[3]  # one more chunk of room in the ring


def test_sampling_temperature_scales_the_draws(tiny_ckpt, tmp_path):
    """`temperature` scales the student's noise draws: near 0 two seeds give the same chunk, at 1 they
    differ; the checkpoint's `temperature` is the default; a bad value is refused by name."""
    import shutil

    from causvid_env.checkpoint import load_world_model
    from causvid_env.engine import DreamEngine
    from causvid_env.worlds import get_world

    world = get_world("cartpole")
    ck = tmp_path / "ck"
    shutil.copytree(tiny_ckpt, ck)
    info = json.loads((ck / "checkpoint.json").read_text())
    (ck / "checkpoint.json").write_text(json.dumps({**info, "temperature": 0.5}))
    model = load_world_model(ck)
    assert DreamEngine(model, world, 1).temperature == 0.5 and DreamEngine(model, world, 1, temperature=1.0).temperature == 1.0
    assert CausVidEnv(checkpoint=ck).engine.temperature == 0.5 and CausVidVectorEnv(2, checkpoint=ck, temperature=0.3).engine.temperature == 0.3

    def spread(temperature):  # the same chunks under two seeds
        outs = []
        for seed in (0, 1):
            eng = DreamEngine(model, world, 1, temperature=temperature)
            eng.seed(0, seed)
            eng.chunk([None], reset=np.ones(1, bool))
            outs.append(np.concatenate([eng.chunk([np.ones(4, np.int64)]).frames for _ in range(2)]).astype(int))
        return np.abs(outs[0] - outs[1]).mean()

    assert spread(1e-4) < 0.05 * spread(1.0)
    for bad in (0, -1.0, 3.0, True, "low"):
        with pytest.raises(ValueError, match="temperature"):
            DreamEngine(model, world, 1, temperature=bad)
