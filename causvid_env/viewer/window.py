"""Display and keymap half of the viewer, and the one pygame window module of the package: the
window (also `CausVidEnv`'s `render_mode="human"`), overlay, prompt text box, key -> action.

Nothing here knows about environments: the window draws frames and text it is given, the
:class:`KeyMap` / :class:`KeyActions` turn key names (``pygame.key.name``) into actions of a
world, and the :class:`TextBox` edits a line of text from pygame events. pygame is imported
lazily (`import_pygame`, with the install hint), so importing this module needs no display.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from causvid_env.worlds import WorldSpec, get_world

__all__ = ["import_pygame", "KeyMap", "KeyActions", "TextBox", "ViewerWindow"]


def import_pygame():
    try:
        import pygame
    except ImportError as e:  # pragma: no cover - install hint
        raise ImportError("rendering to a window needs pygame: pip install pygame-ce (or pip install 'gymnasium[classic-control]')") from e
    return pygame


class KeyMap:
    """A set of pressed key names -> an action, from a ``keymap`` (key name -> action).

    Args:
        keymap: pygame key name (``"left"``, ``"a"``, ``"space"``, ...) -> action.
        null_action: action when no mapped key is pressed; ``None`` (a world with no no-op,
            like CartPole) repeats the last action, starting from the first keymap entry.

    When several mapped keys are pressed, the one listed last in ``keymap`` wins.
    """

    def __init__(self, keymap: dict[str, Any], null_action: Any = None) -> None:
        if not isinstance(keymap, dict) or not keymap:
            raise ValueError(f"keymap must be a non-empty dict of key name -> action, got {keymap!r}")
        self.keymap = dict(keymap)
        self.null_action = null_action
        self.last_action = null_action if null_action is not None else next(iter(self.keymap.values()))

    def action_for(self, pressed: Iterable[str]) -> Any:
        """The action for the set of pressed key names (updates the remembered last action)."""
        pressed = set(pressed)
        action = None
        for name, a in self.keymap.items():
            if name in pressed:
                action = a
        if action is None:
            action = self.null_action if self.null_action is not None else self.last_action
        self.last_action = action
        return action


class KeyActions:
    """Key names -> an action of a world, from the world's ``keymap`` and ``null_action``.

    Held keys are tracked from KEYDOWN/KEYUP *events* (not ``pygame.key.get_pressed``) so that
    scripted, posted events and real key presses take the same path. A key tapped and released
    between two chunks still counts for the next chunk (a short tap is not lost while the
    previous chunk is on screen). With no mapped key the action is the world's null action,
    or the last action where the world has none (CartPole always pushes).
    """

    def __init__(self, world: str | WorldSpec):
        self.world = get_world(world)
        self.agent = KeyMap(self.world.keymap, self.world.null_action)
        self.held: list[str] = []  # in press order; the most recent press wins
        self.tapped: list[str] = []

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.world.keymap)

    def press(self, name: str) -> bool:
        """A mapped key went down; returns False for keys the world does not use."""
        if name not in self.world.keymap:
            return False
        if name in self.held:
            self.held.remove(name)
        self.held.append(name)
        self.tapped.append(name)
        return True

    def release(self, name: str) -> None:
        if name in self.held:
            self.held.remove(name)

    def release_all(self) -> None:
        self.held.clear()

    def next_action(self) -> Any:
        """The action for the next chunk; clears the taps since the previous call."""
        recent = [k for k in self.tapped + self.held]
        self.tapped = []
        # KeyMap: the last-listed pressed key wins, so pass only the most recent one.
        return self.agent.action_for(recent[-1:] if recent else [])

    @property
    def last_action(self) -> Any:
        return self.agent.last_action


class TextBox:
    """A one-line text editor fed with pygame events (TEXTINPUT for characters).

    ``open(purpose)`` starts editing; :meth:`handle` returns ``("submit", purpose, text)`` on
    Enter, ``("cancel", purpose, "")`` on Esc, else None. SDL sends a TEXTINPUT for the very key
    that opened the box (the ``t`` of ``T``); the first TEXTINPUT equal to that key is swallowed.
    """

    def __init__(self, max_len: int = 200):
        self.active = False
        self.purpose = ""
        self.text = ""
        self.max_len = max_len
        self._swallow: str | None = None

    def open(self, purpose: str, text: str = "", opened_by: str | None = None) -> None:
        self.active, self.purpose, self.text = True, purpose, text
        self._swallow = opened_by

    def close(self) -> None:
        self.active, self._swallow = False, None

    def handle(self, event) -> tuple[str, str, str] | None:
        pg = import_pygame()
        if not self.active:
            return None
        if event.type == pg.TEXTINPUT:
            swallow, self._swallow = self._swallow, None
            if swallow is not None and event.text.lower() == swallow.lower():
                return None
            self.text = (self.text + event.text)[: self.max_len]
        elif event.type == pg.KEYDOWN:
            self._swallow = None
            if event.key in (pg.K_RETURN, pg.K_KP_ENTER):
                purpose, text = self.purpose, self.text.strip()
                self.close()
                return ("submit", purpose, text)
            if event.key == pg.K_ESCAPE:
                purpose = self.purpose
                self.close()
                return ("cancel", purpose, "")
            if event.key == pg.K_BACKSPACE:
                self.text = self.text[:-1]
        return None


def upscale(frame: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour integer upscale of an (H, W, 3) frame (crisp pixels, no blur)."""
    return np.repeat(np.repeat(frame, scale, axis=0), scale, axis=1)


class ViewerWindow:
    """The pygame window: one or two upscaled frames side by side, an overlay, a text box.

    Window size is ``scale * (W, H)``, twice as wide in twin mode (dream left, real right). The
    overlay is drawn *on* the frames (translucent box, top left of each panel), so the window size
    stays a plain multiple of the frame size.
    """

    def __init__(self, frame_hw: tuple[int, int], scale: int = 6, title: str = "CausVid dream", twin: bool = False,
                 font_size: int | None = None):
        if int(scale) < 1:
            raise ValueError(f"scale: must be a positive integer, got {scale!r}")
        self.pg = pg = import_pygame()
        pg.display.init()  # display + font only: pg.init() would also open audio (mixer)
        pg.font.init()
        pg.display.set_caption(title)
        self.frame_hw = (int(frame_hw[0]), int(frame_hw[1]))
        self.scale = int(scale)
        self.font = pg.font.Font(None, font_size or max(14, 3 * self.scale + 2))
        self.small = pg.font.Font(None, max(12, int((font_size or 3 * self.scale + 2) * 0.85)))
        self.twin = None
        self.screen = None
        self.clock = pg.time.Clock()
        self.set_twin(twin)

    @property
    def panel_size(self) -> tuple[int, int]:
        H, W = self.frame_hw
        return W * self.scale, H * self.scale

    @property
    def size(self) -> tuple[int, int]:
        w, h = self.panel_size
        return (2 * w if self.twin else w, h)

    def set_twin(self, twin: bool) -> None:
        if twin != self.twin:
            self.twin = bool(twin)
            self.screen = self.pg.display.set_mode(self.size)

    def _blit_frame(self, frame: np.ndarray, x: int) -> None:
        pg = self.pg
        surf = pg.surfarray.make_surface(np.ascontiguousarray(upscale(frame, self.scale).transpose(1, 0, 2)))
        self.screen.blit(surf, (x, 0))

    def _text_block(self, lines: Sequence[str], x: int, y: int, max_w: int, font=None,
                    color=(255, 255, 255), bg=(0, 0, 0, 150)) -> int:
        """Draw lines (wrapped to max_w) on a translucent box; returns the y below it."""
        pg, font = self.pg, font or self.font
        wrapped = [w for line in lines for w in wrap_text(line, font, max_w - 8)]
        if not wrapped:
            return y
        surfs = [font.render(s, True, color) for s in wrapped]
        h = sum(s.get_height() for s in surfs) + 6
        w = max(s.get_width() for s in surfs) + 8
        box = pg.Surface((w, h), pg.SRCALPHA)
        box.fill(bg)
        self.screen.blit(box, (x, y))
        yy = y + 3
        for s in surfs:
            self.screen.blit(s, (x + 4, yy))
            yy += s.get_height()
        return y + h

    def draw(self, dream: np.ndarray, real: np.ndarray | None = None, overlay: Sequence[str] = (),
             real_overlay: Sequence[str] = (), status: Sequence[str] = (), textbox: TextBox | None = None) -> None:
        """Draw one tick: the frame(s), the overlay lines (dream panel), the real panel's lines, a
        status line at the bottom (PAUSED, REC, ...) and the open text box; then flip."""
        pw, ph = self.panel_size
        self.screen.fill((0, 0, 0))
        self._blit_frame(dream, 0)
        if self.twin:
            if real is not None:
                self._blit_frame(real, pw)
            self.pg.draw.line(self.screen, (255, 255, 0), (pw, 0), (pw, ph), 1)
        self._text_block(list(overlay), 2, 2, pw - 4)
        if self.twin and real_overlay:
            self._text_block(list(real_overlay), pw + 2, 2, pw - 4)
        y_bottom = ph
        if textbox is not None and textbox.active:
            label = {"prompt": "prompt", "image": "image path"}.get(textbox.purpose, textbox.purpose)
            lines = [f"{label}> {textbox.text}_", "Enter: confirm   Esc: cancel"]
            h = self._measure(lines, self.font, self.size[0] - 8)
            self._text_block(lines, 2, ph - h - 2, self.size[0] - 4, bg=(20, 20, 80, 220))
            y_bottom = ph - h - 4
        if status:
            h = self._measure([" ".join(status)], self.small, self.size[0] - 8)
            self._text_block([" ".join(status)], 2, y_bottom - h - 2, self.size[0] - 4, font=self.small,
                             color=(255, 220, 80))
        self.pg.display.flip()

    def _measure(self, lines: Sequence[str], font, max_w: int) -> int:
        n = sum(len(wrap_text(line, font, max_w)) for line in lines)
        return n * font.get_linesize() + 6

    def to_array(self) -> np.ndarray:
        """The whole window (frames + overlay) as (H, W, 3) uint8."""
        return np.ascontiguousarray(self.pg.surfarray.array3d(self.screen).transpose(1, 0, 2))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.pg.image.save(self.screen, str(path))
        return path

    def show(self, frame: np.ndarray, fps: float) -> None:
        """One frame alone, held until the next tick at `fps` (`CausVidEnv`'s `render_mode="human"`)."""
        self.pg.event.pump()
        self.draw(frame)
        self.clock.tick(fps)

    def poll(self) -> list:
        return self.pg.event.get()

    def close(self) -> None:
        self.pg.display.quit()


def wrap_text(text: str, font, max_w: int) -> list[str]:
    """Greedy word wrap of one line to ``max_w`` pixels (a single long word is hard-cut)."""
    words, lines, cur = text.split(" "), [], ""
    for w in words:
        cand = w if not cur else cur + " " + w
        if font.size(cand)[0] <= max_w or not cur:
            cur = cand
        else:
            lines.append(cur)
            cur = w
        while font.size(cur)[0] > max_w and len(cur) > 1:  # hard-cut one overlong word
            k = len(cur)
            while k > 1 and font.size(cur[:k])[0] > max_w:
                k -= 1
            lines.append(cur[:k])
            cur = cur[k:]
    if cur or not lines:
        lines.append(cur)
    return lines


def key_name(event) -> str:
    """``pygame.key.name`` of a KEYDOWN/KEYUP event ('left', 't', 'tab', '.', ...)."""
    return import_pygame().key.name(event.key)


def key_event(pressed: bool, name: str, unicode: str = ""):
    """A KEYDOWN/KEYUP event for a key name, as SDL would deliver it (used by scripted input)."""
    pg = import_pygame()
    try:
        code = pg.key.key_code(name)
    except ValueError as e:
        raise ValueError(f"script: unknown key name {name!r} (use pygame.key.name names like 'left', 'tab', 'r', '.')") from e
    return pg.event.Event(pg.KEYDOWN if pressed else pg.KEYUP, key=code, mod=0, scancode=0, unicode=unicode)


def text_events(text: str) -> Iterable:
    pg = import_pygame()
    for ch in text:
        yield pg.event.Event(pg.TEXTINPUT, text=ch)
