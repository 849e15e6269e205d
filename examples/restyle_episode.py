"""Restyle one recorded real episode into every variant's appearance (streaming video-to-video).

    python examples/restyle_episode.py                          # -> restyle/restyle.mp4 and restyle/strip.png
    python examples/restyle_episode.py --strength 0.75 --seconds 6 --policy held_random --out restyle
    python examples/restyle_episode.py --checkpoint runs/cartpole/checkpoint --variants long_red_low_gravity,short_blue_strong_push

The real twin (`evaluation.rollouts.rollout_twin`, default variant: brown pole, black cart)
plays one episode; the recorded frames are then fed 4 at a time, with their real actions, to a
`StreamingRestyler` under each variant's prompt, as a live stream would be. The MP4 shows the
input and each restyled stream side by side, labelled; the PNG strip (rows: the input, then each
variant) shows a frame every 0.5 s.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from causvid_env.v2v import StreamingRestyler
from causvid_env.worlds import get_world
from evaluation.rollouts import rollout_twin
from models.config_utils import add_dataclass_args


@dataclass
class Args:
    checkpoint: str | None = None
    """world-model checkpoint directory (default: the shipped one)"""
    strength: float = 0.5
    """noise strength in (0, 1]: ~0.5 keeps the input's motion, 1 regenerates it"""
    seconds: float = 4.0
    """length of the recorded episode"""
    policy: str = "noisy_balance"
    """twin policy: balance, noisy_balance, held_random, random"""
    variants: str = ""
    """comma-separated variant names (default: all of the world's)"""
    seed: int = 0
    scale: int = 2
    """integer upscale of each 64x96 panel in the video"""
    threads: int = 1
    out: str = "restyle"
    """output directory"""


def label_row(names: list[str], panel_w: int, sep: int, height: int = 14) -> np.ndarray:
    """A white strip with each panel's name above it."""
    w = len(names) * panel_w + (len(names) - 1) * sep
    img = Image.new("RGB", (w, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for i, name in enumerate(names):
        draw.text((i * (panel_w + sep) + 2, 1), name[: panel_w // 6], fill=(0, 0, 0))
    return np.asarray(img)


def compose(panels: list[np.ndarray], labels: np.ndarray, scale: int, sep: int) -> np.ndarray:
    """Panels (H, W, 3) side by side, upscaled, grey separators, labels on top -> one frame."""
    up = [np.repeat(np.repeat(p, scale, 0), scale, 1) for p in panels]
    bar = np.full((up[0].shape[0], sep, 3), 128, np.uint8)
    row = np.concatenate([x for p in up for x in (p, bar)][:-1], axis=1)
    return np.concatenate([labels, row], axis=0)


def run(a: Args) -> dict:
    torch.set_num_threads(a.threads)
    world = get_world("cartpole")
    names = [v for v in a.variants.split(",") if v] or list(world.variant_names)
    variants = [world.variant(n) for n in names]  # fails early on a bad name
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    ep = rollout_twin(world, a.seed, a.policy, a.seconds)
    F = ep.F
    print(f"recorded {len(ep.frames)} real frames ({a.policy}, seed {a.seed})")
    r = StreamingRestyler(a.checkpoint, strength=a.strength, world=world, seed=a.seed)
    restyled, latency = {}, []
    for v in variants:
        r.reset(seed=a.seed)
        r.set_prompt(v.prompt)
        restyled[v.name] = r.feed_episode(ep.frames, ep.actions, latency)  # chunk by chunk, as a live stream
        print(f"  {v.name}: {v.prompt!r}")

    import imageio.v2 as imageio

    sep = 2
    W = world.frame_width * a.scale
    labels = label_row(["input (real twin)"] + names, W, sep)
    video = out / "restyle.mp4"
    with imageio.get_writer(video, fps=world.fps, codec="libx264", quality=7, macro_block_size=1, ffmpeg_log_level="error") as w:
        for i in range(len(ep.frames)):
            frame = compose([ep.frames[i]] + [restyled[n][i] for n in names], labels, a.scale, sep)
            w.append_data(frame[: frame.shape[0] // 2 * 2, : frame.shape[1] // 2 * 2])  # libx264 needs even sizes
    # strip: rows = input + variants, columns = one frame every 0.5 s
    idx = list(range(0, len(ep.frames), world.fps // 2))
    rows = [np.concatenate([f[i] for i in idx], axis=1) for f in [ep.frames] + [restyled[n] for n in names]]
    strip = out / "strip.png"
    # native size, 256-colour palette: a small file for docs
    Image.fromarray(np.concatenate(rows, axis=0)).quantize(256).save(strip, optimize=True)
    ms = 1000 * float(np.mean(latency))
    print(f"restyle: strength {a.strength:g} -> level t={r.timestep:.2f} ({r.steps} step(s)), {ms:.0f} ms per {F}-frame chunk "
          f"({F / ms * 1000:.0f} frames/s, {torch.get_num_threads()} thread(s))")
    print(f"wrote {video} and {strip}")
    return {"video": str(video), "strip": str(strip), "ms_per_chunk": ms, "frames": len(ep.frames), "variants": names}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_dataclass_args(p, Args)
    t0 = time.time()
    res = run(Args(**vars(p.parse_args(argv))))
    print(f"done in {time.time() - t0:.0f} s")
    return res


if __name__ == "__main__":
    main()
