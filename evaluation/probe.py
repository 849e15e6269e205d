"""A state probe: a small CNN that reads the true simulator state back from ONE frame.

It is trained on real frames only (the real twin's renders with their true states), so applied to
a dream frame it answers "where does the dream *show* the pole and the cart?" -- the closed-loop
evaluation compares that with where the real twin has them under the same actions.

Targets are per world (`PROBE_TARGETS`); for `cartpole`: the pole angle in degrees and the cart
position in metres (the track is 4.8 m = 96 px wide, so 1 m = 20 px). One frame suffices for
both; velocities would need two frames and are not probed. Its own held-out error on real frames
is saved next to the weights (`probe_eval.json`) and must be read as the floor of every probe error.

    python -m evaluation.probe --world cartpole --out runs/probe             # ~1-2 min on 1 core
    python -m evaluation.probe --world cartpole --out runs/probe --data runs/cartpole/data

Python: `train_probe(...) -> (StateProbe, eval dict)`, `StateProbe.from_pretrained(dir)`,
`probe.predict(frames) -> (N, n_targets)` in reported units.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from causvid_env.probe import PROBE_TARGETS, ProbeConfig, StateProbe
from causvid_env.worlds import get_world
from distill.collect import rollout_episode
from distill.dataset import EpisodeDataset

__all__ = ["ProbeConfig", "StateProbe", "PROBE_TARGETS", "probe_state", "probe_frames_from_rollouts", "probe_frames_from_dataset",
           "train_probe", "fit_probe", "evaluate_probe", "load_probe", "resolve_probe", "main"]


# ----------------------------------------------------------------------------- data
def probe_state(read: np.ndarray, ia: int, ix: int, fps: int) -> np.ndarray:
    """CartPole's (x, x_dot, theta, theta_dot) from the probe's readings of one chunk's frames (F, targets):
    the pose at the last frame, the rates from a least-squares line through the F readings (what a
    controller that sees the frames only through the probe acts on)."""
    t = np.arange(len(read)) / fps
    x_dot, theta_dot = np.polyfit(t, read[:, ix], 1)[0], math.radians(np.polyfit(t, read[:, ia], 1)[0])
    return np.array([read[-1, ix], x_dot, math.radians(read[-1, ia]), theta_dot])


def probe_frames_from_rollouts(world: str, episodes: int, seed: int, max_frames: int = 400, stride: int = 2):
    """Frames and states of real rollouts with the collection's policy mix (all variants, balancing,
    random and held pushes, run on past termination). Every `stride`-th frame is kept."""
    spec = get_world(world)
    frames, states = [], []
    for i in range(episodes):
        ep = rollout_episode(spec, seed, 7919, i, max_frames)  # shard 7919: never a collection shard id in practice
        frames.append(ep["frames"][::stride])
        states.append(ep["states"][::stride])
    return np.concatenate(frames), np.concatenate(states)


def probe_frames_from_dataset(path: str | Path, episode_ids: list[int] | None = None, stride: int = 2, max_frames: int | None = None):
    """Frames and states of a collected dataset (`distill.collect` output), a subset of episodes."""
    ds = EpisodeDataset(path)
    ids = range(len(ds)) if episode_ids is None else episode_ids
    frames, states = [], []
    for i in ids:
        ep = ds[int(i)]
        frames.append(ep.frames[::stride])
        states.append(ep.states[::stride])
        if max_frames is not None and sum(len(f) for f in frames) >= max_frames:
            break
    return np.concatenate(frames), np.concatenate(states)


# ----------------------------------------------------------------------------- training
def evaluate_probe(probe: StateProbe, frames: np.ndarray, states: np.ndarray) -> dict:
    """Mean / 90th percentile absolute error per target on (real) frames."""
    err = np.abs(probe.predict(frames) - probe.targets(states))
    out = {"frames": int(len(frames))}
    for j, name in enumerate(probe.config.target_names):
        out[f"{name}_mae"] = float(err[:, j].mean())
        out[f"{name}_p90"] = float(np.percentile(err[:, j], 90))
    return out


def fit_probe(train_frames: np.ndarray, train_states: np.ndarray, heldout_frames: np.ndarray, heldout_states: np.ndarray, *,
              steps: int = 1500, batch_size: int = 64, lr: float = 2e-3, seed: int = 0, progress: bool = False,
              config: ProbeConfig | None = None) -> tuple[StateProbe, dict]:
    """Train on (frames, states) arrays; evaluate on the held-out ones."""
    t0 = time.time()
    cfg = config or ProbeConfig()
    tr_f, tr_s = train_frames, train_states
    torch.manual_seed(seed)
    probe = StateProbe(cfg)
    y_all = torch.from_numpy(probe.targets(tr_s) / np.asarray(cfg.target_norm, np.float32))
    x_all = torch.from_numpy(tr_f)
    flip = torch.tensor(cfg.flip_sign, dtype=torch.float32)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps), pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    it = range(steps)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="probe", dynamic_ncols=True)
    probe.train()
    loss = torch.tensor(0.0)
    for _ in it:
        idx = torch.randint(len(x_all), (batch_size,), generator=g)
        x = x_all[idx].permute(0, 3, 1, 2).float().div(127.5).sub(1.0)  # (B, 3, H, W)
        y = y_all[idx]
        m = torch.rand(batch_size, generator=g) < 0.5  # mirror half the batch
        x = torch.where(m[:, None, None, None], x.flip(-1), x)
        y = torch.where(m[:, None], y * flip, y)
        loss = nn.functional.smooth_l1_loss(probe(x), y, beta=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    probe.eval()
    ev = evaluate_probe(probe, heldout_frames, heldout_states)
    ev.update({"train_frames": int(len(tr_f)), "steps": steps, "final_loss": float(loss.detach()), "train_seconds": round(time.time() - t0, 1),
               "units": {n: ("degrees" if "deg" in n else "metres") for n in cfg.target_names}})
    return probe, ev


def train_probe(world: str = "cartpole", *, steps: int = 1500, batch_size: int = 64, lr: float = 2e-3, seed: int = 0,
                episodes: int = 32, heldout_episodes: int = 4, max_frames: int = 400, data: str | Path | None = None, max_data_frames: int = 16000,
                out: str | Path | None = None, progress: bool = False, config: ProbeConfig | None = None) -> tuple[StateProbe, dict]:
    """Train a probe on real frames and report its held-out error on real frames.

    data: a dataset directory to read frames from instead of simulating (`heldout_episodes` of its
    episodes, the last ones, are held out). Otherwise `episodes` + `heldout_episodes` fresh real
    rollouts are simulated (~320 frames/s). Mirroring left-right doubles the data (CartPole is
    symmetric: x and theta change sign). Saves to `out` (config.json, model.safetensors,
    probe_eval.json) when given."""
    t0 = time.time()
    cfg = config or ProbeConfig.for_world(world)
    if data is not None:
        n = len(EpisodeDataset(data))
        if n < 2:
            raise ValueError(f"data: {data} holds {n} episode(s); need at least 2 (train + held out)")
        split = Path(data).parent / "split.json"  # the pipeline's split: hold out its held-out episodes
        if split.is_file():
            sp = json.loads(split.read_text())
            train_ids, held_ids = sp["train"], sp["heldout"]
        else:
            k = min(max(1, heldout_episodes), n - 1)
            train_ids, held_ids = list(range(n - k)), list(range(n - k, n))
        tr_f, tr_s = probe_frames_from_dataset(data, train_ids, stride=3, max_frames=max_data_frames)
        ho_f, ho_s = probe_frames_from_dataset(data, held_ids, stride=5, max_frames=max_data_frames // 4)
    else:
        tr_f, tr_s = probe_frames_from_rollouts(world, episodes, seed, max_frames)
        ho_f, ho_s = probe_frames_from_rollouts(world, heldout_episodes, seed + 1, max_frames)
    data_s = time.time() - t0
    probe, ev = fit_probe(tr_f, tr_s, ho_f, ho_s, steps=steps, batch_size=batch_size, lr=lr, seed=seed, progress=progress, config=cfg)
    ev.update({"data_seconds": round(data_s, 1), "source": str(data) if data else "simulated rollouts"})
    if out is not None:
        probe.save_pretrained(out)
        (Path(out) / "probe_eval.json").write_text(json.dumps(ev, indent=2))
    return probe, ev


def load_probe(directory: str | Path) -> tuple[StateProbe, dict]:
    """The probe and its saved held-out evaluation (empty dict when absent)."""
    probe = StateProbe.from_pretrained(directory).eval()
    p = Path(directory) / "probe_eval.json"
    return probe, (json.loads(p.read_text()) if p.is_file() else {})


def resolve_probe(probe_dir: str | Path | None, world: str, out_dir: Path, steps: int = 1500, episodes: int = 32,
                  data: str | Path | None = None):
    """Load a saved probe, or train one (saved to `probe_dir`, else OUT/probe). -> (probe, its held-out eval)."""
    if get_world(world).name not in PROBE_TARGETS:
        return None, {"skipped": f"no probe targets for world {world!r}"}
    if probe_dir is not None and (Path(probe_dir) / "config.json").is_file():
        return load_probe(probe_dir)
    target = Path(probe_dir) if probe_dir is not None else out_dir / "probe"
    return train_probe(world, steps=steps, episodes=episodes, heldout_episodes=max(2, episodes // 6), data=data, out=target)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description="Train the state probe (pole angle, cart position) on real frames.")
    p.add_argument("--world", default="cartpole")
    p.add_argument("--out", required=True, help="directory for config.json, model.safetensors, probe_eval.json")
    p.add_argument("--data", default=None, help="read frames from a collected dataset instead of simulating")
    p.add_argument("--episodes", type=int, default=32)
    p.add_argument("--heldout-episodes", type=int, default=4)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    _, ev = train_probe(a.world, steps=a.steps, seed=a.seed, episodes=a.episodes, heldout_episodes=a.heldout_episodes,
                        data=a.data, out=a.out, progress=True)
    print(json.dumps(ev, indent=2))
    return ev


if __name__ == "__main__":
    main()
