"""The pygame viewer, driven headless by scripted key events on the tiny random checkpoint."""
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
torch.set_num_threads(1)

from causvid_env.viewer.app import main, parse_script, run  # noqa: E402
from causvid_env.viewer.controller import variant_for_prompt  # noqa: E402
from causvid_env.viewer.window import KeyActions, TextBox, upscale  # noqa: E402
from causvid_env.worlds import get_world  # noqa: E402

RED = "a long red pole on a black cart under low gravity"
H, W = 64, 96


def play(ckpt, *args):
    return run(["--checkpoint", str(ckpt), "--headless", "--seed", "0", *map(str, args)])


def test_parse_script_and_variant_lookup():
    items = parse_script(f"right*5, T:{RED} ,Tab,left*3,.,P,R,F")
    assert [(i.kind, i.name, i.count) for i in items] == [
        ("key", "right", 5), ("text", "t", 1), ("key", "tab", 1), ("key", "left", 3),
        ("key", ".", 1), ("key", "p", 1), ("key", "r", 1), ("key", "f", 1)]
    assert items[1].text == RED
    with pytest.raises(ValueError, match="script"):
        parse_script("right*x")
    world = get_world("cartpole")
    assert variant_for_prompt(world, "A long  RED pole on a black cart under low gravity") == "long_red_low_gravity"
    assert variant_for_prompt(world, "a purple elephant") is None


def test_keyactions_null_action_and_textbox():
    import pygame

    keys = KeyActions("cartpole")  # no null action: repeat the last push
    assert keys.next_action() == 0
    keys.press("right"), keys.release("right")  # a tap between chunks still counts
    assert keys.next_action() == 1 and keys.next_action() == 1
    assert not keys.press("space")  # not in the keymap: a command, not an action
    pend = KeyActions("pendulum")  # has a null action
    pend.press("left")
    assert pend.next_action() == [-2.0]
    pend.release("left")
    assert pend.next_action() == [0.0]

    box = TextBox()
    box.open("prompt", opened_by="t")
    events = [pygame.event.Event(pygame.TEXTINPUT, text=c) for c in "tthe"]  # first 't' is the opening key's
    events.append(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_BACKSPACE, mod=0, unicode="", scancode=0))
    events.append(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_RETURN, mod=0, unicode="\r", scancode=0))
    out = [box.handle(e) for e in events]
    assert out[-1] == ("submit", "prompt", "th") and not box.active
    box.open("prompt")
    assert box.handle(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_ESCAPE, mod=0, unicode="", scancode=0))[0] == "cancel"


def test_script_prompt_twin_overlay_and_screenshot(tiny_ckpt, tmp_path):
    shot = tmp_path / "shot.png"
    scale = 3
    app = play(tiny_ckpt, "--scale", scale, "--screenshot", shot,
               "--script", f"right*2,T:{RED},left,Tab,left*2")
    c = app.controller
    # steps: 2 + 1 (new prompt) + 2 after the twin reset; frames: one per tick, 4 per chunk
    assert c.stats.steps == 5 and c.stats.episode_steps == 2
    assert app.frames_shown == 4 * (1 + 3 + 1 + 2)
    # the typed prompt reached the env, and picked the twin's variant
    assert c.env.engine.prompts[0] == RED and c.last_info["prompt"] == RED
    assert c.twin_mode and c.twin_variant == "long_red_low_gravity"
    assert np.isfinite(c.stats.psnr_chunk)
    # window: scale x frame size, twice as wide in twin mode; the screenshot is the whole window
    img = app.final_image
    assert img.shape == (H * scale, 2 * W * scale, 3)
    from PIL import Image
    saved = np.asarray(Image.open(shot).convert("RGB"))
    assert np.array_equal(saved, img)
    # the overlay is drawn over the frames: the top-left corner differs from the plain upscale,
    # while most of the panel is exactly the upscaled frame
    dream, real = app.current
    plain = upscale(dream, scale)
    panel = img[:, : W * scale]
    corner = (slice(0, 12 * scale), slice(0, 40 * scale))
    assert np.abs(panel[corner].astype(int) - plain[corner]).mean() > 10
    assert (panel == plain).all(-1).mean() > 0.3
    assert (img[:, W * scale:] == upscale(real, scale)).all(-1).mean() > 0.5


def test_recording_gif_and_mp4(tiny_ckpt, tmp_path):
    import imageio.v2 as imageio

    gif = tmp_path / "play.gif"
    app = play(tiny_ckpt, "--scale", 2, "--record", gif, "--record-scale", 2, "--script", "right*2,V,left*2")
    assert app.recordings == [(gif, 12)]  # reset chunk + 2 chunks, then V stopped it
    frames = np.stack(imageio.mimread(gif))
    assert frames.shape[:3] == (12, 2 * H, 2 * W)

    mp4 = tmp_path / "play.mp4"
    app = play(tiny_ckpt, "--scale", 2, "--record", mp4, "--record-scale", 1, "--script", "right,Tab,left")
    # Tab changes the frame size: the first segment ends, a twice-as-wide second one starts
    seg2 = tmp_path / "play-2.mp4"
    assert app.recordings == [(mp4, 8), (seg2, 8)]
    for path, n, width in ((mp4, 8, W), (seg2, 8, 2 * W)):
        reader = imageio.get_reader(path)
        assert reader.count_frames() == n
        assert reader.get_data(0).shape == (H, width, 3)
        reader.close()


def test_pause_single_step_and_resets(tiny_ckpt, tmp_path):
    from PIL import Image

    image = tmp_path / "start.png"
    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(image)
    app = play(tiny_ckpt, "--scale", 1, "--script", f"I:{image},right,F,P,left,.,.")
    c = app.controller
    # I typed a path -> image reset; F -> reset from a real frame (twin created, mode off);
    # P paused; the left tap waits for the two single steps
    assert c.last_reset == "real" and c.twin is not None and not c.twin_mode
    assert app.paused and c.stats.steps == 3 and c.stats.episode_steps == 2
    assert app.final_image.shape == (H, W, 3)
    assert c.env.engine.prompts[0] == get_world("cartpole").variant().prompt


def test_main_reports_bad_arguments(capsys):
    assert main(["--headless", "--record", "x.avi"]) == 2
    assert "--record" in capsys.readouterr().err
    assert main(["--headless", "--script", "left*0"]) == 2


def test_headless_random_policy_and_cli_entry(tiny_ckpt):
    import subprocess
    import sys
    from pathlib import Path

    app = play(tiny_ckpt, "--scale", 1, "--steps", 3)  # no script: a seeded random key policy
    assert app.controller.stats.steps == 3 and app.frames_shown == 4 * 4
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "examples" / "play.py"), "--help"], capture_output=True, text=True,
                         cwd=root, timeout=60)
    assert out.returncode == 0 and "--twin" in out.stdout and "Tab twin mode" in out.stdout


@pytest.mark.filterwarnings("error::UserWarning")
def test_ended_episodes_are_never_stepped(tiny_ckpt):
    """The twin stops at its own end (greyed last frame, no divergence readout); the step after the
    dream's end starts a new episode. Neither side is stepped after its end (the filter above turns
    Gymnasium's step-after-end warning into an error)."""
    from causvid_env.env import CausVidEnv
    from causvid_env.viewer.controller import PlayController

    c = PlayController(CausVidEnv(checkpoint=tiny_ckpt, max_episode_steps=3, timing_info=True), seed=0)
    c.toggle_twin()  # both sides from one real frame (seed 0)
    chunks = [c.step(1) for _ in range(3)]  # held right: the real pole falls within 2 chunks
    assert c.stats.real_terminated and c.stats.truncated  # the dream hit max_episode_steps=3
    frozen = chunks[-1].real
    assert (frozen == frozen[0]).all() and frozen[0].std() < chunks[0].real[0].std()  # stopped, washed out
    assert np.isnan(c.stats.psnr_chunk) and np.isnan(c.frame_psnr(chunks[-1].dream[0], frozen[0]))
    assert "stopped" in " ".join(c.real_overlay_lines()) and "new episode" in " ".join(c.overlay_lines(50.0))
    nxt = c.step(1)
    assert nxt.autoreset and nxt.kind == "real" and nxt.real is not None
    assert c.stats.episode_steps == 0 and not (c.stats.real_terminated or c.stats.truncated)
    assert not c.step(0).autoreset
    c.close()


def test_a_prompt_too_long_is_refused_when_typed(tiny_ckpt):
    from causvid_env.env import CausVidEnv
    from causvid_env.viewer.controller import PlayController

    c = PlayController(CausVidEnv(checkpoint=tiny_ckpt), seed=0)
    c.reset_prompt()
    with pytest.raises(ValueError, match="tokens long"):
        c.set_prompt(" ".join([RED] * 4))
    assert c.pending_prompt is None and c.step(1).dream.shape == (4, H, W, 3)  # play goes on
    c.close()
