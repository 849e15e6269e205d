"""The README's code runs exactly as written: every ```python block, in order, in one namespace
(later blocks may use names from earlier ones), on the shipped checkpoint."""
import re
from pathlib import Path

import numpy as np
import pytest

from causvid_env.checkpoint import default_checkpoint_dir

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.M | re.S)


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 2, "the README's API example went missing"


@pytest.mark.skipif(not (default_checkpoint_dir("cartpole") / "checkpoint.json").is_file(), reason="no checkpoint shipped")
@pytest.mark.filterwarnings("error::UserWarning")
def test_readme_python_blocks_run_as_written():
    ns: dict = {"__name__": "readme"}
    for i, code in enumerate(BLOCKS):
        exec(compile(code, f"README.md python block {i + 1}", "exec"), ns)
    # what the comments promise
    assert ns["real_frame"].shape == (64, 96, 3) and ns["real_frame"].dtype == np.uint8
    assert ns["venv"].num_envs == 32
    assert ns["obs"].shape == (64, 96) and ns["grey"].observation_space.contains(ns["obs"])
    assert ns["frame"].shape == (64, 96, 3) and ns["fast"].unwrapped.engine.decode_frames == (3,)


@pytest.mark.filterwarnings("error::UserWarning")
def test_quickstart_reports_progress_and_scores_only_real_frames(tiny_ckpt, tmp_path, capfd, monkeypatch):
    """The README's first command, on the tiny checkpoint and half a second: it says what it is
    doing, writes the video without warnings or library noise (SDL's XDG_RUNTIME_DIR complaint,
    ALSA, transformers' loading bar, imageio's resize warning) and compares only frames the real
    twin produced."""
    monkeypatch.delenv("SDL_VIDEODRIVER", raising=False)  # as on a user's headless machine
    import importlib.util
    import json

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("examples_quickstart", root / "examples" / "quickstart.py")
    qs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(qs)
    summary = qs.main(["--checkpoint", str(tiny_ckpt), "--out", str(tmp_path), "--seconds", "0.5"])
    err = capfd.readouterr().err  # file-descriptor level: SDL writes past sys.stderr
    for noise in ("XDG_RUNTIME_DIR", "ALSA", "Loading weights", "macro_block_size"):
        assert noise not in err, err
    assert "[quickstart] loading" in err and "generating up to 6 chunks" in err
    assert summary["chunks"] == 6 and summary["frames"] == 4 * 7 and summary["real_episode_end_s"] is None
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert (tmp_path / "dream_vs_real.mp4").stat().st_size > 0 and (tmp_path / "dream_vs_real.gif").stat().st_size > 0
