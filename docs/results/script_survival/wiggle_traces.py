"""The pole under the blind wiggle (left, right, right, left, ...) from 4 real starts: the real twin, v8's dream and the
EMA-500 candidate's, read by the state probe at the end of every chunk until the episode ends. Made the PNG and JSON
beside this file: python docs/results/script_survival/wiggle_traces.py"""
from dataclasses import replace
from pathlib import Path

import numpy as np

from causvid_env.checkpoint import default_checkpoint_dir, load_world_model
from causvid_env.env import CausVidEnv
from causvid_env.real_env import RealWorldEnv
from causvid_env.worlds import get_world
from evaluation.probe import load_probe
from evaluation.script_survival import script_actions
from models.dit import DiT
from models.io import write_json

HERE = Path(__file__).parent
spec = get_world("cartpole")
ck = default_checkpoint_dir("cartpole")
probe, _ = load_probe(ck / "probe")
ia = list(probe.config.target_names).index("pole_angle_deg")
base = load_world_model(str(ck))
models = {"v8 (shipped)": base,
          "d1 EMA 500 (v9 candidate)": replace(base, student=DiT.from_pretrained("weights/cartpole_fp32/student_d1_ema500").eval())}
seeds, chunks = [0, 1, 2, 3], 20


def trace(env, reset) -> list[float]:
    """The probe's pole angle after `reset()` and after every chunk of the wiggle until the episode ends."""
    obs, _ = reset()
    frames = [obs[-1]]
    for a in script_actions("wiggle", chunks, 0):
        obs, _, term, trunc, _ = env.step(a)
        frames.append(obs[-1])
        if term or trunc:
            break
    return probe.predict(np.stack(frames))[:, ia].round(2).tolist()


real = RealWorldEnv("cartpole", max_episode_frames=chunks * 4)
traces = {"real twin": {s: trace(real, lambda s=s: real.reset(seed=s)) for s in seeds}}
starts = RealWorldEnv("cartpole")
for name, model in models.items():
    env = CausVidEnv(world="cartpole", checkpoint=model, max_episode_steps=chunks)
    traces[name] = {s: trace(env, lambda s=s: env.reset(seed=s, options={"prompt": spec.variant(None).prompt,
                                                                         "image": starts.reset(seed=s)[0][-1]}))
                    for s in seeds}
write_json(HERE / "wiggle_traces.json", {"script": "wiggle 0110", "seeds": seeds, "pole_angle_deg_per_chunk": traces,
                                         "command": "python docs/results/script_survival/wiggle_traces.py"})
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
fig, axes = plt.subplots(1, len(seeds), figsize=(12, 3), sharey=True)
colors = {"real twin": "k", "v8 (shipped)": "tab:orange", "d1 EMA 500 (v9 candidate)": "tab:brown"}
for ax, s in zip(axes, seeds):
    for name, tr in traces.items():
        y = tr[s]
        ax.plot(np.arange(len(y)) * 4 / spec.fps, y, "-o", ms=3, color=colors[name], label=name)
    ax.axhline(12, color="0.6", ls="--", lw=0.8)
    ax.axhline(-12, color="0.6", ls="--", lw=0.8)
    ax.set_title(f"start {s}")
    ax.set_xlabel("s")
axes[0].set_ylabel("pole angle (probe), deg")
axes[0].legend(fontsize=7)
fig.suptitle("the blind wiggle (left, right, right, left, ...): where the pole goes")
fig.tight_layout()
fig.savefig(HERE / "wiggle_traces.png", dpi=100)
