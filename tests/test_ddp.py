"""Two-process data-parallel training on this CPU (torchrun + Accelerator(cpu=True)), tiny preset:
the whole pipeline runs, and the checkpoint it writes plays in the env."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest


@pytest.mark.slow  # two processes through every stage: ~1-2 min on 2 cores
@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
                    reason="torchrun not installed")
def test_two_process_pipeline_writes_a_playable_checkpoint(tmp_path):
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1", SDL_VIDEODRIVER="dummy", HF_HUB_OFFLINE="1")
    out = tmp_path / "ddp"
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "distill.pipeline", "--world", "cartpole",
                           "--out", str(out), "--preset", "tiny", "--threads", "1", "--device", "cpu"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from causvid_env.env import CausVidEnv

    env_ = CausVidEnv(checkpoint=out / "checkpoint")
    obs, _ = env_.reset(seed=0)
    obs, r, term, trunc, info = env_.step(1)
    assert obs.shape == (4, 64, 96, 3) and np.isfinite(r)
