"""The pygame viewer for human play: ``causvid-play`` (or ``python examples/play.py``).

Split like DIAMOND's ``src/game/``:

- :mod:`causvid_env.viewer.window` -- display and keymap: the pygame window, integer upscaling,
  overlay text, the prompt text box, key -> action from the world's ``keymap``;
- :mod:`causvid_env.viewer.controller` -- control and recording: owns the dream env (and the real
  twin), pause / single step / resets, MP4 or GIF recording, the divergence readout;
- :mod:`causvid_env.viewer.app` -- the command line and the frame loop gluing them together.

pygame is imported lazily (only when a window is opened), so importing this package is cheap.
"""
__all__ = ["main", "run"]


def main(argv=None) -> int:
    from causvid_env.viewer.app import main as _main
    return _main(argv)


def run(argv=None):
    from causvid_env.viewer.app import run as _run
    return _run(argv)
