"""Appearance read from pixels: the colour of the pole and the cart and the pole's length (cartpole).

The state probe (`evaluation.probe`) reads *where* things are; this module reads *what they look
like*, so that a restyled video (`causvid_env.v2v`) can be scored on both: motion kept and
prompt followed. It measures frames of the fixed cartpole camera (64x96):

- the *track row* is the row with the most ink (the track line is drawn across the whole width);
  the cart fills the two rows below it, the axle and the cart top the two rows above it, and the
  pole lies above those (`Layout`);
- colour: the frame is drawn on white with anti-aliasing, so a pixel of a part is
  `white - a * (white - colour)` with a coverage `a` in (0, 1]. Its *ink* `white - pixel` points
  along `white - colour` whatever `a` is, so the ink summed over a part's pixels gives the part's
  colour direction; `colour_error_deg` is the angle between that and a target colour's
  direction (0 deg: same hue and saturation; brightness and coverage do not count);
- length: the farthest pole pixel from the axle, in pixels (`pole_length_px`).

`render_at_states(world, variant, states)` draws a variant at given simulator states: the ideal
restyle of a real video into that variant (its appearance, the input's motion).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from causvid_env.worlds import RGB, WorldSpec, get_world

__all__ = ["Layout", "find_layout", "part_colours", "ink_direction", "colour_error_deg", "nearest_colour",
           "pole_length_px", "render_at_states"]

INK_PIXEL = 150.0  # a pixel belongs to a part when its ink (sum over channels of 255 - value) exceeds this
POLE_REACH_PX = 45.0  # pole pixels are searched within this distance of the axle (the longest pole is ~30 px)


@dataclass(frozen=True)
class Layout:
    """Rows of a cartpole frame: `track` (the track line), the cart below it, the pole above."""
    track: int

    @property
    def cart_rows(self) -> slice:
        return slice(self.track + 1, self.track + 3)

    @property
    def axle_row(self) -> int:
        return self.track - 1

    @property
    def pole_rows(self) -> slice:
        return slice(0, self.track - 2)


def _ink(frames: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 -> (..., 3) float ink, 255 - value."""
    return 255.0 - np.asarray(frames, np.float64)


def find_layout(frame: np.ndarray) -> Layout:
    """The layout of a (real) cartpole frame (H, W, 3) uint8."""
    ink = _ink(frame).sum(-1)
    return Layout(int(np.argmax((ink > 30).sum(1))))


def part_colours(world: str | WorldSpec, variant: str | None) -> dict[str, RGB]:
    """Part name -> RGB of `variant` (the palette with the variant's overrides)."""
    spec = get_world(world)
    return {**spec.palette, **spec.variant(variant).colors}


def _part_mask(frames: np.ndarray, layout: Layout, part: str) -> np.ndarray:
    """(N, H, W) bool: ink pixels of `part` ("pole" or "cart")."""
    ink = _ink(frames).sum(-1)  # (N, H, W)
    mask = np.zeros(ink.shape, bool)
    rows = {"pole": layout.pole_rows, "cart": layout.cart_rows}[part]
    mask[:, rows] = ink[:, rows] > INK_PIXEL
    return mask


def ink_direction(frames: np.ndarray, layout: Layout, part: str) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 3) unit colour direction of `part` (NaN where the part has no ink)."""
    frames = np.asarray(frames)
    mask = _part_mask(frames, layout, part)
    total = (_ink(frames) * mask[..., None]).sum((1, 2))  # (N, 3)
    norm = np.linalg.norm(total, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, total / norm, np.nan)


def _direction(rgb: RGB) -> np.ndarray:
    d = 255.0 - np.asarray(rgb, np.float64)
    return d / np.linalg.norm(d)


def colour_error_deg(frames: np.ndarray, layout: Layout, part: str, colour: RGB) -> np.ndarray:
    """(N,) angle in degrees between `part`'s colour in each frame and `colour` (NaN: part not seen)."""
    cos = ink_direction(frames, layout, part) @ _direction(colour)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def nearest_colour(frames: np.ndarray, layout: Layout, part: str, colours: dict[str, RGB]) -> np.ndarray:
    """(N,) name of the colour in `colours` nearest (by angle) to `part`'s colour; "" where unseen."""
    names = list(colours)
    d = ink_direction(frames, layout, part)  # (N, 3)
    cos = d @ np.stack([_direction(colours[n]) for n in names]).T  # (N, K)
    best = np.nanargmax(np.where(np.isnan(cos), -2.0, cos), axis=1)
    return np.where(np.isnan(d[:, 0]), "", np.asarray(names)[best])


def pole_length_px(frames: np.ndarray, layout: Layout) -> np.ndarray:
    """(N,) distance in pixels from the axle (the cart's centre column, the axle row) to the farthest
    pole pixel within `POLE_REACH_PX` (NaN where there is no cart or no pole)."""
    frames = np.asarray(frames)
    cart = _part_mask(frames, layout, "cart")
    pole = _part_mask(frames, layout, "pole")
    H, W = frames.shape[1:3]
    rr, cc = np.mgrid[0:H, 0:W]
    out = np.full(len(frames), np.nan)
    for i in range(len(frames)):
        cols = np.nonzero(cart[i].any(0))[0]
        if not len(cols) or not pole[i].any():
            continue
        axle_c = 0.5 * (cols.min() + cols.max())
        dist = np.hypot(rr - layout.axle_row, cc - axle_c)[pole[i]]
        dist = dist[dist <= POLE_REACH_PX]
        if len(dist):
            out[i] = float(dist.max())
    return out


def render_at_states(world: str | WorldSpec, variant: str | None, states: np.ndarray) -> np.ndarray:
    """The real twin's frames of `variant` drawn at simulator `states` (N, state_dim) -> (N, H, W, 3)
    uint8: a video with the states' motion and the variant's appearance (colours and pole length)."""
    from causvid_env.rendering import Simulator

    sim = Simulator(world, variant)
    try:
        sim.reset(seed=0)
        frames = []
        for s in np.asarray(states, np.float64):
            sim.set_state(s)
            frames.append(sim.render_frame())
        return np.stack(frames)
    finally:
        sim.close()
