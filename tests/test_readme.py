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
