"""How physical is the dream an agent meets? The simulator's verdict on every chunk, no real future needed.

From real starts (image resets, as agents train), blind action scripts play in the dream and in the
real twin; the frozen probe reads cart and pole off every frame, and for each chunk the real CartPole
physics is stepped through the chunk's actions from the state fitted to the 8 frames before it
(`distill.physics_consistency`). The error is where the chunk shows the pole and cart against where
the physics takes what the previous frames showed: a dream that damps the inverted pendulum, answers
a push late or lets the pole jump is off; the real twin is off only by the probe's own noise (its
row is the floor). Chunks are counted up to the episode's first terminating one. Besides the blind
scripts, `balancer` is CartPole's linear state feedback acting on the state the probe reads off each
chunk: it keeps the pole up for the whole episode in the real twin, so the chunks an agent meets after
the blind scripts' falls are judged too.

    python -m evaluation.dream_physics --json out.json                          # the shipped checkpoint
    python -m evaluation.dream_physics --student runs/p1/dmd_self_forcing/model_step100 --student DIR2 --json out.json
"""
from __future__ import annotations

import argparse
import shlex
import sys

import numpy as np
import torch
from tqdm import tqdm

from agents.baselines import BalancingAgent
from causvid_env.engine import sampling_temperature
from causvid_env.worlds import get_world
from distill.physics_consistency import physics_targets, physics_units
from evaluation.probe import load_probe, probe_state
from evaluation.script_survival import (_envs, add_dream_arguments, check_dream_arguments, dream_models, frames_until_end,
                                        reset_episode, script_actions)
from models.io import write_json

# chunk ranges (1-based, after the reset chunk) the summary reports
RANGES = ((1, 3), (4, 10), (11, 25))


BALANCER = "balancer"  # CartPole's linear state feedback on the state the probe reads off each chunk


def play(model, world: str, script: str, seeds: list[int], chunks: int, temperature: float | None, progress: bool, label: str,
         probe=None):
    """Frames (chunks + 1, F, H, W, 3) per start up to the first terminating chunk, and the actions of each chunk.
    `script` a name of `SCRIPTS`, or `BALANCER` (needs `probe`): a controller that keeps the pole up longer,
    so the chunks an agent meets after the first second are judged too."""
    spec = get_world(world)
    env, where, starts = _envs(model, world, chunks, temperature)
    balancer = None
    if script == BALANCER:
        names = list(probe.config.target_names)
        ia, ix, balancer = names.index("pole_angle_deg"), names.index("cart_x_m"), BalancingAgent()
    out = []
    for s in tqdm(seeds, desc=f"dream physics {label} {script}", disable=not progress):
        acts = None if balancer else script_actions(script, chunks, s)
        obs, info = reset_episode(env, where, s, spec, real_starts=starts)
        frames, used = [np.asarray(obs)], []
        for i in range(chunks):
            a = balancer.act(info={"state": probe_state(probe.predict(np.asarray(obs)), ia, ix, spec.fps)}) if balancer else acts[i]
            obs, _, terminated, truncated, info = env.step(a)
            n, ended = frames_until_end(info, spec.frames_per_chunk)
            if n < spec.frames_per_chunk and not ended:  # the real twin ran past its end inside the chunk
                break
            frames.append(np.asarray(obs))
            used.append(int(a))
            if ended or terminated or truncated:
                break
        out.append((np.stack(frames), used))
    env.close()
    if starts is not None:
        starts.close()
    return out


def chunk_errors(probe, episodes, prompt: str, world: str, fit_frames: int = 8) -> list[np.ndarray]:
    """Per episode (chunks, 2): the mean |reading - target| of each generated chunk, [cart m, pole deg] (NaN: no target)."""
    out = []
    for frames, acts in episodes:
        C, F_ = frames.shape[0], frames.shape[1]
        read = torch.from_numpy(probe.predict(frames.reshape(C * F_, *frames.shape[2:])))  # (N, n_targets) deg, m
        r = physics_units(read, probe.config.target_names).double()[None]
        push = torch.zeros(1, C * F_, dtype=torch.float64)
        acted = torch.zeros(1, C * F_, dtype=torch.bool)
        for i, a in enumerate(acts):
            push[0, (i + 1) * F_:(i + 2) * F_] = float(a)
            acted[0, (i + 1) * F_:(i + 2) * F_] = True
        tg, mask = physics_targets(r, push, acted, [prompt], world, 1, F_, fit_frames)
        err = (r - tg).abs()[0].view(C, F_, 2).mean(1).numpy()
        err[:, 1] = np.degrees(err[:, 1])
        err[~mask[0].view(C, F_).all(1).numpy()] = np.nan
        out.append(err[1:])
    return out


def summarise(errors: list[np.ndarray]) -> dict:
    """Mean errors over chunk ranges and over all chunks, with the number of chunks in each."""
    res = {}
    for lo, hi in RANGES + ((1, 10 ** 6),):
        rows = [e[lo - 1:hi] for e in errors if len(e) >= lo]
        rows = np.concatenate(rows) if rows else np.zeros((0, 2))
        rows = rows[np.isfinite(rows).all(1)]
        key = "all" if hi == 10 ** 6 else f"chunks_{lo}_{hi}"
        res[key] = {"cart_m": float(rows[:, 0].mean()) if len(rows) else None,
                    "pole_deg": float(rows[:, 1].mean()) if len(rows) else None, "chunks": int(len(rows))}
    res["episode_chunks"] = float(np.mean([len(e) for e in errors]))
    return res


def one_line(name: str, per_script: dict) -> str:
    parts = [f"{s}: pole {r['all']['pole_deg']:.2f} deg / cart {r['all']['cart_m']:.3f} m over {r['all']['chunks']} chunks"
             for s, r in per_script.items() if r["all"]["chunks"]]
    return f"{name}: " + "; ".join(parts)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m evaluation.dream_physics", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dream_arguments(p, starts=12, chunks=25, chunks_help="25 = 2 s", scripts="random,wiggle,left,balancer")
    p.add_argument("--probe", default=None, help="the state probe that reads the frames (default: the checkpoint's probe/)")
    p.add_argument("--json", default=None)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    a = p.parse_args(argv)
    scripts = check_dream_arguments(p, a, extra=(BALANCER,))
    spec = get_world(a.world)
    ckpt, models = dream_models(a)
    probe_dir = a.probe or f"{ckpt}/probe"
    probe, _ = load_probe(probe_dir)
    seeds = list(range(a.first_seed, a.first_seed + a.starts))
    prompt = spec.variant(None).prompt
    res = {"kind": "dream_physics", "world": a.world, "checkpoint": ckpt, "probe": probe_dir, "starts": a.starts, "seeds": seeds,
           "chunks": a.chunks, "scripts": scripts, "units": "mean |probe reading - physics target| per chunk: cart m, pole deg",
           "reset": "image (the real twin's reset frame for seed i, the default variant's prompt)", "models": {}}
    for name, model in [("real twin", None)] + models:
        per = {}
        for s in scripts:
            eps = play(model, a.world, s, seeds, a.chunks, a.temperature, a.progress, name, probe)
            per[s] = summarise(chunk_errors(probe, eps, prompt, a.world))
        if model is not None:
            per["temperature"] = sampling_temperature(model, a.temperature)
        res["models"][name] = per
        print(one_line(name, {k: v for k, v in per.items() if k in scripts}), flush=True)
    res["command"] = "python -m evaluation.dream_physics " + shlex.join(argv if argv is not None else sys.argv[1:])
    if a.json:
        write_json(a.json, res)
    return res


if __name__ == "__main__":
    main()
