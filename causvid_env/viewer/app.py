"""``causvid-play``: play a world model with the keyboard (or headless, from a script).

    causvid-play                                   # CartPole dream, arrow keys, shipped checkpoint
    causvid-play --checkpoint runs/cartpole/checkpoint --twin --record play.mp4
    causvid-play --headless --steps 20 --screenshot shot.png \\
        --script "right*5,T:a long red pole on a black cart under low gravity,Tab,left*3"

Keys: the world's keymap (CartPole: left/right arrows; no key = repeat the last push),
T prompt (Enter confirms, Esc cancels), R reset from the prompt, I reset from an image,
F reset from a real frame of the twin, P pause, . single step while paused, V record on/off,
Tab twin mode (dream | real side by side), Y restyle mode (the live twin restyled under the prompt,
streaming video-to-video, side by side with it), Esc quit.

Episode ends: when the dream's termination head fires, the next chunk starts a new episode (the
same kind of reset as the last one). The real twin stops at the end of its own episode and shows
its last frame greyed out until the next reset (F, or the dream's next episode).

The loop runs at the world's fps and shows one frame per tick; when the frames of the last
chunk are all shown it reads the keys and generates the next chunk (a slow machine shows the
chunk late, never skips frames). Scripted events are posted to pygame's event queue and take
exactly the path of real key presses.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from causvid_env.viewer.controller import Chunk, PlayController, Recorder, load_image, segment_path
from causvid_env.viewer.window import KeyActions, TextBox, ViewerWindow, key_event, key_name, text_events

__all__ = ["build_parser", "parse_script", "ViewerApp", "run", "main"]

HELP_LINE = "T prompt  R reset  I image  F real frame  P pause  . step  V rec  Tab twin  Y restyle  Esc quit"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="causvid-play", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--world", default="cartpole", help="world name (default: cartpole)")
    p.add_argument("--checkpoint", default=None, help="checkpoint directory (default: the one shipped for the world)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--prompt", default=None, help="starting prompt (default: the world's default variant)")
    p.add_argument("--image", default=None, help="image file for the first reset and for the I key")
    p.add_argument("--fps", type=float, default=None, help="display rate (default: the world's fps)")
    p.add_argument("--scale", type=int, default=6, help="integer upscale of the frames (default: 6)")
    p.add_argument("--record", default=None, help="record shown frames from the start to this .mp4 or .gif "
                                                  "(V toggles; later segments get -2, -3, ... suffixes)")
    p.add_argument("--record-scale", type=int, default=4, help="upscale of recorded frames (default: 4)")
    p.add_argument("--twin", action="store_true", help="start in twin mode (real simulator side by side)")
    p.add_argument("--restyle", action="store_true", help="start in restyle mode (Y): the real twin restyled "
                                                       "under the prompt, side by side with it")
    p.add_argument("--strength", type=float, default=0.5, help="restyle noise strength in (0, 1] (default 0.5: "
                                                            "keeps the input's motion, changes its look)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first reset, the twin seeds and the random policy")
    p.add_argument("--window-seconds", type=float, default=None, help="context kept in the KV cache (default: the window the checkpoint was trained with)")
    p.add_argument("--headless", action="store_true", help="no display needed (SDL dummy driver when $DISPLAY is unset); "
                                                        "runs --steps chunks as fast as possible, then exits")
    p.add_argument("--steps", type=int, default=None, help="chunks to generate before stopping (headless default: 10, "
                                                          "or what --script needs); with a window: pause after them")
    p.add_argument("--script", default=None, help="comma-separated scripted events: key names with repeat counts "
                                                  "('right*5'), 'T:<prompt>', 'I:<image path>', 'Tab', 'R', 'F', 'P', '.', 'V'")
    p.add_argument("--screenshot", default=None, help="save the whole window (with overlay) as PNG when --steps are done")
    p.add_argument("--linger", type=float, default=None, help="with a window and --steps: quit this many seconds after the "
                                                             "steps are done (default: stay open)")
    return p


# -- scripted input ------------------------------------------------------------------------------
@dataclass
class ScriptItem:
    kind: str          # "key" or "text"
    name: str          # key name ("right", "tab", ".") or the key that opens the text box ("t", "i")
    count: int = 1
    text: str = ""


_ALIASES = {"period": ".", "dot": ".", "enter": "return", "esc": "escape"}


def parse_script(script: str | None) -> list[ScriptItem]:
    """``"right*5,T:a red pole,Tab,left*3"`` -> items; raises ValueError naming ``script``."""
    items: list[ScriptItem] = []
    for raw in (script or "").split(","):
        tok = raw.strip()
        if not tok:
            continue
        head, sep, text = tok.partition(":")
        if sep and head.strip().lower() in ("t", "i"):
            items.append(ScriptItem("text", head.strip().lower(), 1, text.strip()))
            continue
        name, star, count = tok.rpartition("*") if "*" in tok else (tok, "", "1")
        name = name.strip().lower()
        name = _ALIASES.get(name, name)
        try:
            n = int(count)
        except ValueError:
            raise ValueError(f"script: bad repeat count in {tok!r}; write key*N, e.g. 'right*5'") from None
        if n < 1 or not name:
            raise ValueError(f"script: bad item {tok!r}")
        items.append(ScriptItem("key", name, n))
    return items


class ScriptDriver:
    """Posts scripted events into pygame's queue, one *round* at a time.

    A round is the moment the viewer wants the next chunk (all frames of the last one shown and
    the last tap used). Control keys and text items are posted together with the next action-key
    tap, so ``"V,right*2"`` records two chunks pushed right. Each action-key repetition is one tap
    (KEYDOWN + KEYUP) and, while a script runs, each tap makes exactly one chunk (control keys make
    none), so a script's output is reproducible; after it, play goes on as with a keyboard.
    """

    def __init__(self, items: list[ScriptItem], keymap: dict):
        self.keymap = keymap
        self.units: deque[list] = deque()
        pending: list = []
        for it in items:
            for _ in range(it.count):
                pending.extend(self._events(it))
                if it.kind == "key" and it.name in keymap:
                    self.units.append(pending)
                    pending = []
        if pending:
            self.units.append(pending)
        self.action_taps = sum(it.count for it in items if it.kind == "key" and it.name in keymap)

    @staticmethod
    def _events(it: ScriptItem) -> list:
        ch = it.name if len(it.name) == 1 else ""
        evs = [key_event(True, it.name, ch)]
        if ch and ch.isprintable():
            evs += list(text_events(ch))  # what SDL sends after a printable KEYDOWN
        evs.append(key_event(False, it.name, ch))
        if it.kind == "text":
            evs += list(text_events(it.text))
            evs += [key_event(True, "return", "\r"), key_event(False, "return", "\r")]
        return evs

    @property
    def done(self) -> bool:
        return not self.units

    def post_round(self) -> None:
        from causvid_env.viewer.window import import_pygame

        pg = import_pygame()
        if self.units:
            for ev in self.units.popleft():
                pg.event.post(ev)


# -- the app -------------------------------------------------------------------------------------
class ViewerApp:
    """The frame loop: events -> controller -> frame queue -> window (+ recorder)."""

    def __init__(self, args: argparse.Namespace, env=None):
        from causvid_env.worlds import get_world

        self.args = args
        self.world = get_world(args.world)
        self._image = load_image(args.image) if args.image else None  # fail before opening anything
        self._image_path: str | None = args.image
        if env is None:
            from causvid_env.env import CausVidEnv

            # No time limit in human play: the episode ends when the termination head says so.
            env = CausVidEnv(self.world, checkpoint=args.checkpoint, device=args.device, window_seconds=args.window_seconds,
                             max_episode_steps=10**9, prompt=args.prompt, timing_info=True)  # the overlay shows the latency
        self.controller = PlayController(env, seed=args.seed, prompt=args.prompt)
        self.fps = float(args.fps or self.world.fps)
        self.window = ViewerWindow((self.world.frame_height, self.world.frame_width), args.scale,
                                   title=f"CausVid dream: {self.world.name}", twin=bool(args.twin))
        self.clock = self.window.pg.time.Clock()
        self.keys = KeyActions(self.world)
        self.textbox = TextBox()
        self.queue: deque = deque()
        self.current: tuple[np.ndarray, np.ndarray | None] | None = None
        self.paused = False
        self.single_steps = 0
        self.running = True
        self.frames_shown = 0
        self.message, self._message_until = "", 0.0
        self.recorder: Recorder | None = None
        self.recordings: list[tuple[Path, int]] = []
        self._record_index = 0
        self._record_base = Path(args.record) if args.record else None
        items = parse_script(args.script)
        self.script = ScriptDriver(items, self.world.keymap) if items else None
        self.headless = bool(args.headless)
        steps = args.steps
        if steps is None and self.headless:
            steps = self.script.action_taps if self.script else 10
        self.target_steps = steps
        self._policy_rng = np.random.default_rng(args.seed)
        self.final_image: np.ndarray | None = None
        self.screenshot_path: Path | None = None
        self._done_at: float | None = None
        self.controller.restyle_strength = args.strength
        # first episode
        if args.restyle:
            self._show_chunk(self._toggle_restyle())
        elif args.twin:
            self.controller.twin_mode = True
            self._show_chunk(self.controller.reset_real())
        elif self._image is not None:
            self._show_chunk(self.controller.reset_image(self._image))
        else:
            self._show_chunk(self.controller.reset_prompt())
        if args.record:
            self.start_recording()

    # -- messages / recording ----------------------------------------------------------------
    def say(self, text: str, seconds: float = 3.0) -> None:
        self.message, self._message_until = text, time.monotonic() + seconds
        print(f"[causvid-play] {text}", file=sys.stderr)

    def start_recording(self) -> None:
        self._record_index += 1
        base = self._record_base or Path(f"causvid-play-{time.strftime('%Y%m%d-%H%M%S')}.mp4")
        path = segment_path(base, self._record_index)
        self.recorder = Recorder(path, fps=round(self.fps), scale=self.args.record_scale)
        self.say(f"recording to {path}")

    def stop_recording(self) -> None:
        if self.recorder is not None:
            n = self.recorder.close()
            self.recordings.append((self.recorder.path, n))
            self.say(f"saved {n} frames to {self.recorder.path}")
            self.recorder = None

    def toggle_recording(self) -> None:
        if self.recorder is None:
            self.start_recording()
        else:
            self.stop_recording()

    # -- intents -----------------------------------------------------------------------------
    def _show_chunk(self, chunk: Chunk | None) -> None:
        if chunk is None:
            return
        if chunk.kind != "step":
            self.queue.clear()  # a reset replaces whatever was still to be shown
        self.queue.extend(chunk.frames())

    def _safely(self, fn, *a) -> None:
        """User-triggered actions report bad input (a bad path, an empty prompt) instead of crashing."""
        try:
            self._show_chunk(fn(*a))
        except (ValueError, TypeError, OSError) as e:
            self.say(f"error: {e}", 6.0)

    def on_text(self, purpose: str, text: str) -> None:
        if purpose == "prompt":
            if text:
                try:
                    self.controller.set_prompt(text)
                    self.say(f"prompt for the next chunk: {text}", 1.0)
                except (ValueError, TypeError) as e:
                    self.say(f"error: {e}", 6.0)
        elif purpose == "image" and text:
            try:
                self._image, self._image_path = load_image(text), text
            except (ValueError, OSError) as e:
                self.say(f"error: {e}", 6.0)
                return
            self._safely(self.controller.reset_image, self._image)

    def on_command(self, name: str) -> bool:
        """A control key; returns False if ``name`` is not one."""
        c = self.controller
        if name == "t":
            self.textbox.open("prompt", opened_by="t")
        elif name == "r":
            self._safely(c.reset_prompt)
        elif name == "i":
            if self.args.image:
                self._safely(c.reset_image, self._image)
            else:  # no --image: type a path (prefilled with the last one)
                self.textbox.open("image", text=self._image_path or "", opened_by="i")
        elif name == "f":
            self._safely(c.reset_real)
        elif name == "p":
            self.paused = not self.paused
            self.single_steps = 0
        elif name == ".":
            if self.paused:
                self.single_steps += 1
        elif name == "v":
            self.toggle_recording()
        elif name == "tab":
            self._safely(self._toggle_twin)
        elif name == "y":
            self._safely(self._toggle_restyle)
        elif name == "escape":
            self.running = False
        else:
            return False
        return True

    def _toggle_restyle(self):
        chunk = self.controller.toggle_restyle()
        self.window.set_twin(self.controller.twin_mode)
        if self.recorder is not None:  # frame size may change: close this segment, start the next
            self.stop_recording()
            self.start_recording()
        return chunk

    def _toggle_twin(self):
        chunk = self.controller.toggle_twin()
        self.window.set_twin(self.controller.twin_mode)
        if self.recorder is not None:  # frame size changes: close this segment, start the next
            self.stop_recording()
            self.start_recording()
        if chunk is None:  # twin off: keep showing the dream alone
            self.queue = deque((d, None) for d, _ in self.queue)
            if self.current is not None:
                self.current = (self.current[0], None)
        return chunk

    def handle_event(self, event) -> None:
        pg = self.window.pg
        if event.type == pg.QUIT:
            self.running = False
            return
        if self.textbox.active:
            res = self.textbox.handle(event)
            if res is not None and res[0] == "submit":
                self.on_text(res[1], res[2])
            return
        if event.type == pg.KEYDOWN:
            name = key_name(event)
            if not self.keys.press(name):
                self.on_command(name)
        elif event.type == pg.KEYUP:
            self.keys.release(key_name(event))
        elif event.type == getattr(pg, "WINDOWFOCUSLOST", -1):
            self.keys.release_all()

    # -- the loop ----------------------------------------------------------------------------
    @property
    def steps_done(self) -> bool:
        return self.target_steps is not None and self.controller.stats.steps >= self.target_steps

    @property
    def scripting(self) -> bool:
        return self.script is not None and not self.script.done

    def _wants_chunk(self) -> bool:
        if self.queue or self.textbox.active:  # typing freezes the dream
            return False
        if self.paused:
            return self.single_steps > 0
        if self.scripting:  # a script is the clock: one chunk per scripted action tap
            return bool(self.keys.tapped)
        if (self.headless or self._done_at is not None) and self.steps_done:
            return False
        return True

    def tick(self) -> None:
        """One display frame: input, maybe one new chunk, show the next frame."""
        if self.scripting and not self.queue and (not self.keys.tapped or (self.paused and not self.single_steps)):
            self.script.post_round()  # the next round once the last tap has made its chunk
        elif not self.queue and self.script is None and self.headless and not self.paused:
            # random key policy: tap a random mapped key (or nothing) each chunk
            keys = list(self.world.keymap) + [None]
            k = keys[self._policy_rng.integers(len(keys))]
            if k is not None:  # posted like a real tap, so it takes the same path as the keyboard
                self.window.pg.event.post(key_event(True, k))
                self.window.pg.event.post(key_event(False, k))
        for event in self.window.poll():
            self.handle_event(event)
        if self._wants_chunk():
            if self.paused:
                self.single_steps -= 1
            try:
                ended_return = self.controller.stats.episode_return
                chunk = self.controller.step(self.keys.next_action())
                if chunk.autoreset:
                    self.say(f"episode ended (return {ended_return:.1f}): new episode", 2.0)
                self._show_chunk(chunk)
            except (ValueError, TypeError) as e:
                self.say(f"error: {e}", 6.0)
        if self.queue:
            self.current = self.queue.popleft()
            self.frames_shown += 1
            if self.recorder is not None:
                d, r = self.current
                self.recorder.add(d if r is None else np.concatenate([d, r], axis=1))
        self.draw()
        if self.headless:
            self.clock.tick()
        else:
            self.clock.tick(self.fps)

    def draw(self) -> None:
        c = self.controller
        dream, real = self.current
        shown_fps = self.clock.get_fps()
        status = []
        if self.paused:
            status.append("PAUSED (. step)")
        if self.recorder is not None:
            status.append(f"REC {self.recorder.path.name} {self.recorder.frames}f")
        if self.message and time.monotonic() < self._message_until:
            status.append(self.message)
        if not status:
            status.append(HELP_LINE)
        self.window.draw(dream, real if c.twin_mode else None,
                         overlay=c.overlay_lines(shown_fps, c.frame_psnr(dream, real if c.twin_mode else None)),
                         real_overlay=c.real_overlay_lines(), status=status, textbox=self.textbox)

    def finished(self) -> bool:
        if not self.running:
            return True
        if self.queue or self.single_steps > 0 or not self.steps_done or self.scripting:
            return False
        if self.headless:
            return True
        # with a window: pause once the steps are done, optionally quit after --linger seconds
        if self._done_at is None:
            self._done_at = time.monotonic()
            self.save_screenshot()
        return self.args.linger is not None and time.monotonic() - self._done_at >= self.args.linger

    def save_screenshot(self) -> None:
        if self.args.screenshot:
            self.screenshot_path = self.window.save(self.args.screenshot)
            print(f"[causvid-play] screenshot saved to {self.screenshot_path}", file=sys.stderr)

    def loop(self) -> "ViewerApp":
        max_ticks = None
        if self.headless:  # guard against a script that pauses forever
            max_ticks = 10 * self.controller.F * (max(self.target_steps or 0, 1) + len(self.script.units if self.script else []) + 10)
        ticks = 0
        try:
            while not self.finished():
                self.tick()
                ticks += 1
                if max_ticks is not None and ticks >= max_ticks:
                    self.say("headless run stopped: the script left the viewer paused")
                    break
            if self.headless:
                self.save_screenshot()
            self.final_image = self.window.to_array()
        finally:
            self.close()
        return self

    def close(self) -> None:
        self.stop_recording()
        self.controller.close()
        self.window.close()


def _prepare_display(headless: bool) -> None:
    if headless and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")


def run(argv=None, env=None) -> ViewerApp:
    """Parse ``argv``, run the viewer until it is closed (or the headless run ends); returns the app
    (its ``controller``, ``recordings``, ``final_image`` ... for tests and scripts)."""
    args = build_parser().parse_args(argv)
    if not 0.0 < args.strength <= 1.0:
        raise ValueError(f"--strength: must be in (0, 1], got {args.strength}")
    if args.scale < 1:
        raise ValueError(f"--scale: must be a positive integer, got {args.scale}")
    if args.record and Path(args.record).suffix.lower() not in Recorder.SUFFIXES:
        raise ValueError(f"--record: the file must end in .mp4 or .gif, got {args.record!r}")
    parse_script(args.script)  # fail early on a bad script
    _prepare_display(args.headless)
    return ViewerApp(args, env=env).loop()


def main(argv=None) -> int:
    try:
        app = run(argv)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"causvid-play: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    for path, n in app.recordings:
        print(f"recorded {n} frames to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
