"""Control and recording half of the viewer: the dream env, the real twin, resets, recording.

No pygame here: :class:`PlayController` turns user intents (step with this action, new prompt,
reset from a prompt / an image / a real frame, toggle twin mode) into env calls and returns the
frames to show as a :class:`Chunk`; :class:`Recorder` writes shown frames to MP4 or GIF with
imageio. The app decides *when* (frame ticks, keys); this module decides *what*.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from causvid_env.worlds import WorldSpec, get_world
from models.metrics import psnr

__all__ = ["Chunk", "PlayController", "Recorder", "variant_for_prompt", "load_image"]


@dataclass
class Chunk:
    """Frames to show, one per tick: ``dream`` (F, H, W, 3) and, in twin mode, ``real`` (same shape)."""

    dream: np.ndarray
    real: np.ndarray | None = None
    kind: str = "step"  # "step" or the reset kind: "prompt", "image", "real"
    autoreset: bool = False  # a reset made by step() because the last episode had ended

    def frames(self) -> list[tuple[np.ndarray, np.ndarray | None]]:
        return [(self.dream[i], None if self.real is None else self.real[i]) for i in range(len(self.dream))]


def variant_for_prompt(world: WorldSpec, prompt: str | None) -> str | None:
    """Name of the variant whose prompt is ``prompt`` (case and spacing ignored), else None."""
    if prompt is None:
        return None
    key = " ".join(prompt.lower().split())
    for v in world.variants:
        if " ".join(v.prompt.lower().split()) == key:
            return v.name
    return None


def load_image(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB (any size: the env resizes it)."""
    from PIL import Image

    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"image: no such file {str(path)!r}")
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


class Recorder:
    """Writes frames to ``path`` with imageio: ``.mp4`` via ffmpeg (libx264), ``.gif`` via Pillow.

    Frames are upscaled by ``scale`` (nearest). All frames of one file must have the same size; the
    caller starts a new segment when the size changes (twin mode toggled while recording).
    """

    SUFFIXES = (".mp4", ".gif")

    def __init__(self, path: str | Path, fps: int, scale: int = 1):
        path = Path(path)
        if path.suffix.lower() not in self.SUFFIXES:
            raise ValueError(f"record: the file must end in .mp4 or .gif, got {str(path)!r}")
        import imageio.v2 as imageio

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.fps, self.scale, self.frames, self.shape = path, int(fps), int(scale), 0, None
        if path.suffix.lower() == ".gif":
            # GIF frame delays are whole centiseconds; Pillow rounds 1000/fps ms (50 fps -> 20 ms).
            self._writer = imageio.get_writer(path, mode="I", duration=1000.0 / self.fps, loop=0)
        else:
            # macro_block_size=2: libx264/yuv420p needs even sizes only; keep frames unresized.
            self._writer = imageio.get_writer(path, fps=self.fps, codec="libx264", quality=8,
                                              macro_block_size=2, ffmpeg_log_level="error")

    def add(self, frame: np.ndarray) -> None:
        if self.scale > 1:
            frame = np.repeat(np.repeat(frame, self.scale, axis=0), self.scale, axis=1)
        if self.shape is None:
            self.shape = frame.shape
        assert frame.shape == self.shape, "one recording holds frames of one size"
        self._writer.append_data(np.ascontiguousarray(frame))
        self.frames += 1

    def close(self) -> int:
        self._writer.close()
        return self.frames


def segment_path(path: Path, index: int) -> Path:
    """``run.mp4`` for the first recording, then ``run-2.mp4``, ``run-3.mp4``, ..."""
    return path if index <= 1 else path.with_name(f"{path.stem}-{index}{path.suffix}")


@dataclass
class Stats:
    """What the overlay shows about the dream (and the twin)."""

    steps: int = 0                 # dream env steps since the viewer started
    episode_steps: int = 0
    reward: float = 0.0            # last chunk's reward
    episode_return: float = 0.0
    terminated: bool = False
    truncated: bool = False
    latency_s: float = float("nan")
    context_seconds: float = 0.0
    real_return: float = 0.0
    real_terminated: bool = False
    real_truncated: bool = False
    psnr_chunk: float = float("nan")  # mean PSNR dream vs real over the last chunk
    extra: dict[str, Any] = field(default_factory=dict)


class PlayController:
    """Owns the dream env and (lazily) its real twin; every method returns the :class:`Chunk` to show.

    Episode ends follow Gymnasium's rules, so no env is ever stepped after it ended: the step after
    the dream's episode ended starts a new one (the same kind of reset as the last; the action is
    dropped, as in NEXT_STEP autoreset), and a twin whose episode ended is no longer stepped -- it
    shows its final frame, greyed, until the next reset, while the dream goes on.

    Args:
        env: a :class:`~causvid_env.env.CausVidEnv` (obs_mode="chunk").
        seed: seeds the first dream reset and the random twin seeds (a reproducible session).
        prompt: starting prompt (default: the env's default prompt).
        image: optional (H, W, 3) image for the first reset.
        twin: start in twin mode (both sides from one real frame).
    """

    def __init__(self, env, seed: int | None = 0, prompt: str | None = None, twin_factory=None):
        self.env = env
        self.world: WorldSpec = get_world(env.world)
        self.rng = np.random.default_rng(seed)
        self._first_seed = seed
        self.prompt: str = prompt if prompt is not None else env.default_prompt
        self.pending_prompt: str | None = None
        self.twin_mode = False
        self.twin = None
        self.restyle_mode = False  # Y: restyle the live twin under the prompt (streaming video-to-video)
        self.restyler = None
        self.restyle_strength = 0.5
        self._restyle_ended = False
        self._twin_factory = twin_factory
        self.stats = Stats()
        self.last_info: dict = {}
        self.real_info: dict = {}
        self.last_reset = "prompt"
        self._image: np.ndarray | None = None
        self._real_final: np.ndarray | None = None
        self.F = self.world.frames_per_chunk

    # -- seeds / twin ----------------------------------------------------------------------------
    def _seed(self) -> int:
        if self._first_seed is not None:
            s, self._first_seed = int(self._first_seed), None
            return s
        return int(self.rng.integers(2**31 - 1))

    def _twin_env(self):
        if self.twin is None:
            if self._twin_factory is not None:
                self.twin = self._twin_factory()
            else:
                from causvid_env.real_env import RealWorldEnv
                self.twin = RealWorldEnv(self.world)
        return self.twin

    @property
    def twin_variant(self) -> str | None:
        return None if self.twin is None else self.twin.variant_name

    # -- resets ----------------------------------------------------------------------------------
    def _after_reset(self, obs: np.ndarray, info: dict, kind: str, real: np.ndarray | None = None) -> Chunk:
        self.last_info = info
        self.prompt, self.pending_prompt = info.get("prompt", self.prompt), None
        s = self.stats
        s.episode_steps, s.reward, s.episode_return, s.terminated = 0, 0.0, 0.0, False
        s.truncated = False
        s.real_return, s.real_terminated, s.real_truncated = 0.0, False, False
        self._real_final = None if real is None else real[-1]
        s.latency_s = float(info.get("latency_s", float("nan")))
        s.context_seconds = float(info.get("context_seconds", 0.0))
        self.last_reset = kind
        chunk = Chunk(obs, real if self.twin_mode else None, kind)
        self._divergence(chunk)
        return chunk

    def reset_prompt(self, prompt: str | None = None) -> Chunk:
        """R: a new dream episode generated from the (pending or current) prompt alone."""
        prompt = prompt or self.pending_prompt or self.prompt
        if self.twin_mode:  # keep the two sides comparable: twin mode always starts from a real frame
            self.prompt = prompt
            return self.reset_real()
        obs, info = self.env.reset(seed=self._seed(), options={"prompt": prompt})
        return self._after_reset(obs, info, "prompt")

    def reset_image(self, image: np.ndarray) -> Chunk:
        """I: a dream episode whose first chunk is ``image`` (zero-shot image-to-world)."""
        self.restyle_mode = False
        self._image = image
        prompt = self.pending_prompt or self.prompt
        obs, info = self.env.reset(seed=self._seed(), options={"image": image, "prompt": prompt})
        return self._after_reset(obs, info, "image")

    def reset_real(self) -> Chunk:
        """F: reset the twin (random seed, the variant matching the prompt if any), then the dream
        from that very frame; in twin mode both sides then run under the same keys."""
        if self.restyle_mode:
            return self.reset_restyle()
        prompt = self.pending_prompt or self.prompt
        twin = self._twin_env()
        options = {}
        variant = variant_for_prompt(self.world, prompt)
        if variant is not None:
            options["variant"] = variant
        elif twin.variant_name != self.world.default_variant:
            options["variant"] = self.world.default_variant
        seed = self._seed()
        real_obs, real_info = twin.reset(seed=seed, options=options)
        self.real_info = real_info
        obs, info = self.env.reset(seed=seed, options={"image": real_obs[-1], "prompt": prompt})
        return self._after_reset(obs, info, "real", real=real_obs)

    def reset_again(self) -> Chunk:
        """The same kind of reset as the last one (used after toggling twin mode off, etc.)."""
        if self.last_reset == "image" and self._image is not None:
            return self.reset_image(self._image)
        if self.last_reset == "real":
            return self.reset_real()
        return self.reset_prompt()

    def toggle_twin(self) -> Chunk | None:
        """Tab: twin mode on resets both sides from one real frame; off keeps the dream running."""
        self.twin_mode = not self.twin_mode
        self.restyle_mode = False
        if self.twin_mode:
            return self.reset_real()
        self.stats.psnr_chunk = float("nan")
        return None

    # -- prompt / step ---------------------------------------------------------------------------
    def set_prompt(self, prompt: str) -> None:
        """T: the prompt for the next chunk (checked now -- empty, too long -- so a bad prompt never reaches step)."""
        self.pending_prompt = self.env.check_prompt(prompt, "prompt")

    @property
    def real_ended(self) -> bool:
        return self.stats.real_terminated or self.stats.real_truncated

    def step(self, action: Any) -> Chunk:
        """One chunk under ``action`` (held for its F frames), in the dream and, in twin mode, the
        twin; after the dream's episode ended, a new episode instead (``chunk.autoreset``)."""
        if self.stats.terminated or self.stats.truncated:
            chunk = self.reset_again()
            chunk.autoreset = True
            return chunk
        if self.restyle_mode:
            return self.restyle_step(action)
        arg = action if self.pending_prompt is None else {"action": action, "prompt": self.pending_prompt}
        obs, reward, terminated, truncated, info = self.env.step(arg)
        self.last_info = info
        self.prompt, self.pending_prompt = info.get("prompt", self.prompt), None
        s = self.stats
        s.steps += 1
        s.episode_steps += 1
        s.reward = float(reward)
        if not s.terminated:
            s.episode_return += float(reward)
        s.terminated = s.terminated or bool(terminated)
        s.truncated = s.truncated or bool(truncated)
        s.latency_s = float(info.get("latency_s", float("nan")))
        s.context_seconds = float(info.get("context_seconds", 0.0))
        real = None
        if self.twin_mode and self.twin is not None:
            if self.real_ended:  # never step an ended episode: show its final frame, greyed
                real = np.repeat(self._greyed_final()[None], len(obs), axis=0)
            else:
                real, r_reward, r_term, r_trunc, self.real_info = self.twin.step(action)
                s.real_return += float(r_reward)
                s.real_terminated, s.real_truncated = bool(r_term), bool(r_trunc)
                self._real_final = real[-1]
        chunk = Chunk(obs, real, "step")
        self._divergence(chunk)
        return chunk

    def _greyed_final(self) -> np.ndarray:
        final = self._real_final if self._real_final is not None else np.zeros((*self.world.frame_shape,), np.uint8)
        return (0.4 * final.astype(np.float32) + 77).astype(np.uint8)  # washed out: this side has stopped

    def _divergence(self, chunk: Chunk) -> None:
        if chunk.real is None or (self.real_ended and chunk.kind == "step"):
            self.stats.psnr_chunk = float("nan")
            return
        self.stats.psnr_chunk = float(np.mean([min(psnr(d, r), 99.0) for d, r in zip(chunk.dream, chunk.real)]))

    def frame_psnr(self, dream: np.ndarray, real: np.ndarray | None) -> float:
        """Divergence readout of one shown frame: PSNR (dB) dream vs real, capped at 99 (nan once the
        twin's episode ended: there is nothing real left to compare with)."""
        return float("nan") if real is None or self.real_ended else min(psnr(dream, real), 99.0)

    # -- restyle mode: streaming video-to-video of the live twin ------------------------------------
    def toggle_restyle(self) -> Chunk:
        """Y: on, the live real twin (in its own look) is restyled chunk by chunk under the prompt
        (restyled | input side by side); off, back to twin mode (dream | real). Both from a new real start."""
        self.restyle_mode = not self.restyle_mode
        self.twin_mode = True
        return self.reset_real()

    def reset_restyle(self) -> Chunk:
        """A new restyle stream: the twin restarts in the world's default variant, the restyler's
        cache empties, and the first real chunk is restyled under the (pending) prompt."""
        from causvid_env.v2v import StreamingRestyler

        prompt = self.pending_prompt or self.prompt
        if self.restyler is None:  # shares the env's model and text encoder
            self.restyler = StreamingRestyler(self.env.model, prompt, self.restyle_strength, world=self.world,
                                              text_encoder=self.env.engine.text_encoder)
        seed = self._seed()
        real, self.real_info = self._twin_env().reset(seed=seed, options={"variant": self.world.default_variant})
        self.restyler.reset(seed=seed)
        self.restyler.set_prompt(prompt)
        out = self.restyler.feed(real)
        self.prompt, self.pending_prompt = prompt, None
        self.stats = Stats(steps=self.stats.steps, latency_s=self.restyler.last_latency_s,
                           context_seconds=self.restyler.context_seconds())
        self._restyle_ended = False
        self.last_reset = "real"
        return Chunk(out, real, "restyle")

    def restyle_step(self, action: Any) -> Chunk:
        """One chunk of the twin under ``action``, restyled with the same action; the step after the
        twin's episode ended starts a new stream."""
        if self._restyle_ended:
            return self.reset_restyle()
        if self.pending_prompt is not None:
            self.restyler.set_prompt(self.pending_prompt)
            self.prompt, self.pending_prompt = self.pending_prompt, None
        real, r_reward, r_term, r_trunc, self.real_info = self.twin.step(action)
        out = self.restyler.feed(real, actions=action)
        s = self.stats
        s.steps += 1
        s.episode_steps += 1
        s.real_return += float(r_reward)
        s.real_terminated = bool(r_term)
        s.latency_s, s.context_seconds = self.restyler.last_latency_s, self.restyler.context_seconds()
        self._restyle_ended = bool(r_term or r_trunc)
        return Chunk(out, real, "step")

    def _generated_fps(self) -> float:
        lat = self.stats.latency_s
        return self.F / lat if lat == lat and lat > 0 else float("nan")

    def _prompt_lines(self) -> list[str]:
        return [f"prompt: {self.prompt}"] + ([f"next prompt: {self.pending_prompt}"] if self.pending_prompt is not None else [])

    def restyle_overlay_lines(self, shown_fps: float) -> list[str]:
        s, r = self.stats, self.restyler
        return [f"restyle | {self._generated_fps():5.1f} fps | chunk {1000 * s.latency_s:4.0f} ms | shown {shown_fps:4.1f} fps",
                f"strength {r.strength:.2f} (t={r.timestep:.2f}, {r.steps} steps) | context {s.context_seconds:4.2f} s",
                *self._prompt_lines()]

    # -- overlay text ----------------------------------------------------------------------------
    def overlay_lines(self, shown_fps: float, frame_psnr: float = float("nan")) -> list[str]:
        if self.restyle_mode:
            return self.restyle_overlay_lines(shown_fps)
        s = self.stats
        lines = [f"dream | gen {self._generated_fps():5.1f} fps | chunk {1000 * s.latency_s:4.0f} ms | shown {shown_fps:4.1f} fps",
                 f"context {s.context_seconds:4.2f} s | step {s.episode_steps}",
                 *self._prompt_lines()]
        end = "  TERMINATED (next chunk: new episode)" if s.terminated else "  TRUNCATED (next chunk: new episode)" if s.truncated else ""
        lines.append(f"reward {s.reward:+.2f} | return {s.episode_return:.1f}" + end)
        if self.twin_mode:
            lines.append(f"divergence: PSNR {frame_psnr:4.1f} dB (chunk {s.psnr_chunk:4.1f} dB)")
        return lines

    def real_overlay_lines(self) -> list[str]:
        if not self.twin_mode or self.twin is None:
            return []
        s = self.stats
        end = "  TERMINATED: stopped (F: new real start)" if s.real_terminated else \
            "  TIME LIMIT: stopped (F: new real start)" if s.real_truncated else ""
        return [f"real twin | variant {self.twin_variant}", f"return {s.real_return:.1f}" + end]

    def close(self) -> None:
        if self.twin is not None:
            self.twin.close()
        self.env.close()
