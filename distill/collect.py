"""Collect episodes from a world's real env into deterministic, resumable shards.

    python -m distill.collect --world cartpole --out data/cartpole --episodes 400 --workers 2

Each episode picks a variant and a policy uniformly at random, starts with the *still
chunk* (F copies of the initial frame, ``action_mask`` False) and then takes one policy
decision per chunk of F frames, the action held for the chunk. CartPole episodes run on
past the standard 12 degree / 2.4 m termination (the standard per-frame ``terminated``
flag is still recorded) until the pole passes 45 degrees, the cart leaves the track, or
``--max-frames`` is reached, so the data shows long balancing, falls and recoveries.

Policies are the scripted ones of ``causvid_env.policies`` (listed there), drawn per episode
with the weights in ``causvid_env.policies.POLICIES`` (variants are drawn uniformly).

On-disk format (``--out DIR``):
  * ``shard_00000.npz`` ... - ``episodes_per_shard`` episodes each, keys ``"{j:03d}/{name}"``
    for episode ``j`` of the shard: ``frames`` (N,H,W,3) uint8, ``actions`` (N,*action_shape)
    (int64 or float32; the action that produced frame i, 0 where masked), ``action_mask``
    (N,) bool (False only for the still chunk, where no action was taken), ``rewards`` (N,)
    float32, ``terminated`` (N,) bool (standard rule evaluated on every frame),
    ``truncated`` (N,) bool (True on the last frame when the episode was cut without a
    standard termination there), ``states`` (N,state_dim) float32, and 0-d unicode
    arrays ``variant``, ``prompt``, ``policy``. N is a multiple of F. Zip entries carry a
    fixed timestamp, so a shard's bytes (and sha256) depend only on (seed, shard index,
    episode count, max frames).
  * ``manifest.json`` - world, seed, arguments, and per shard: file, episodes, frames,
    sha256 and per-episode summaries. Rewritten atomically after every shard.
  * ``CARD.md``       - human-readable statistics.

Re-running with the same ``--out`` resumes: shards already in the manifest with the
right episode count and checksum are kept, the others are (re)generated. Because episode
``j`` of shard ``k`` is a pure function of ``(seed, k, j)``, growing ``--episodes`` neither
loses nor duplicates episodes.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import multiprocessing as mp
import os
import sys
import zipfile
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from causvid_env.policies import action_dtype, play_episode, policies_for
from causvid_env.rendering import Simulator
from causvid_env.worlds import WorldSpec, get_world
from distill.dataset import sha256_file

__all__ = ["CollectConfig", "collect", "rollout_episode", "write_npz", "main"]

FORMAT = "causvid-episodes/1"

# ----------------------------------------------------------------------------- rollout


def rollout_episode(spec: WorldSpec, seed: int, shard: int, index: int, max_frames: int) -> dict[str, Any]:
    """Episode ``index`` of shard ``shard``: a pure function of ``(seed, shard, index)``."""
    rng = np.random.default_rng([seed, shard, index])
    variant = spec.variants[int(rng.integers(len(spec.variants)))]
    policy_table = policies_for(spec)
    names = list(policy_table)
    weights = np.array([policy_table[n][1] for n in names], dtype=np.float64)
    policy_name = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    sim = Simulator(spec, variant.name)
    space = sim.action_space
    policy = policy_table[policy_name][0](spec, space, rng)
    first = sim.reset(seed=int(rng.integers(2**31 - 1)))
    ep = play_episode(spec, sim, policy, first, max_frames - spec.frames_per_chunk)
    sim.close()
    term = ep["terminated"]
    n = len(ep["frames"])
    truncated = np.zeros(n, bool)
    truncated[-1] = not term[-1]
    dtype = action_dtype(space)
    return {
        "frames": np.stack(ep["frames"]).astype(np.uint8),
        "actions": np.stack(ep["actions"]).astype(dtype),
        "action_mask": np.array(ep["action_mask"], bool),
        "rewards": np.array(ep["rewards"], np.float32),
        "terminated": np.array(term, bool),
        "truncated": truncated,
        "states": np.stack(ep["states"]).astype(np.float32),
        "variant": np.array(variant.name),
        "prompt": np.array(variant.prompt),
        "policy": np.array(policy_name),
    }


def episode_summary(ep: dict[str, Any], spec: WorldSpec) -> dict[str, Any]:
    term = ep["terminated"]
    acts = ep["actions"][ep["action_mask"]]
    if acts.dtype.kind in "iu":
        action_counts = {str(k): int(v) for k, v in zip(*np.unique(acts, return_counts=True))}
    else:
        action_counts = {"mean": float(acts.mean()) if acts.size else 0.0,
                         "frac_positive": float((acts > 0).mean()) if acts.size else 0.0}
    first = int(np.argmax(term)) if term.any() else -1
    return {
        "frames": int(len(term)),
        "seconds": len(term) / spec.fps,
        "variant": str(ep["variant"]),
        "policy": str(ep["policy"]),
        "first_terminated_frame": first,
        "terminated_frames": int(term.sum()),
        "ends_terminated": bool(term[-1]),
        "action_counts": action_counts,
    }


# ----------------------------------------------------------------------------- shard i/o


def write_npz(path: str, arrays: dict[str, np.ndarray], compress: bool = True) -> None:
    """Write an ``np.load``-readable .npz with fixed zip timestamps, atomically (temp + os.replace)."""
    tmp = f"{path}.tmp{os.getpid()}"
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(tmp, "w", compression=mode, allowZip64=True) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = mode
            zf.writestr(info, buf.getvalue())
    os.replace(tmp, path)


def shard_name(k: int) -> str:
    return f"shard_{k:05d}.npz"


@dataclass
class CollectConfig:
    world: str
    out: str
    episodes: int
    workers: int = 1
    seed: int = 0
    max_frames: int = 1000
    episodes_per_shard: int = 8
    min_seconds: float = 10.0


def _make_shard(task: tuple[WorldSpec, str, int, int, int, int]) -> dict[str, Any]:
    spec, out, seed, k, n_eps, max_frames = task
    arrays, summaries = {}, []
    for j in range(n_eps):
        ep = rollout_episode(spec, seed, k, j, max_frames)
        summaries.append(episode_summary(ep, spec))
        arrays.update({f"{j:03d}/{key}": v for key, v in ep.items()})
    path = os.path.join(out, shard_name(k))
    write_npz(path, arrays)
    return {
        "index": k,
        "file": shard_name(k),
        "episodes": n_eps,
        "frames": sum(s["frames"] for s in summaries),
        "sha256": sha256_file(path),
        "episode_summaries": summaries,
    }


def _write_json(path: str, obj: Any) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def _validate(cfg: CollectConfig, spec: WorldSpec) -> int:
    F = spec.frames_per_chunk
    for arg in ("episodes", "workers", "episodes_per_shard"):
        if int(getattr(cfg, arg)) <= 0:
            raise ValueError(f"{arg} must be a positive integer, got {getattr(cfg, arg)!r}")
    max_frames = (int(cfg.max_frames) // F) * F
    if max_frames < 2 * F:
        raise ValueError(f"max_frames must be at least 2 chunks ({2 * F} frames), got {cfg.max_frames!r}")
    return max_frames


def collect(cfg: CollectConfig, progress: bool = True) -> dict[str, Any]:
    """Collect (or resume collecting) ``cfg.episodes`` episodes into ``cfg.out``; returns the manifest."""
    spec = get_world(cfg.world)
    max_frames = _validate(cfg, spec)
    os.makedirs(cfg.out, exist_ok=True)
    manifest_path = os.path.join(cfg.out, "manifest.json")
    fixed = {"world": spec.name, "seed": int(cfg.seed), "max_frames": max_frames,
             "episodes_per_shard": int(cfg.episodes_per_shard)}
    done: dict[int, dict[str, Any]] = {}
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            old = json.load(f)
        mismatch = {k: (old.get(k), v) for k, v in fixed.items() if old.get(k) != v}
        if mismatch:
            raise ValueError(
                f"out {cfg.out!r} already holds a collection with different settings "
                f"(found, requested): {mismatch}; use a new --out directory or the same settings"
            )
        for s in old["shards"]:
            path = os.path.join(cfg.out, s["file"])
            if os.path.exists(path) and sha256_file(path) == s["sha256"]:
                done[s["index"]] = s

    eps_per = cfg.episodes_per_shard
    n_shards = math.ceil(cfg.episodes / eps_per)
    wanted = {k: min(eps_per, cfg.episodes - k * eps_per) for k in range(n_shards)}
    shards = {k: s for k, s in done.items() if wanted.get(k) == s["episodes"]}
    todo = [(spec, cfg.out, int(cfg.seed), k, n, max_frames) for k, n in wanted.items() if k not in shards]

    def save() -> dict[str, Any]:
        listed = [shards[k] for k in sorted(shards)]
        manifest = {
            "format": FORMAT,
            **fixed,
            "fps": spec.fps,
            "frame_shape": list(spec.frame_shape),
            "frames_per_chunk": spec.frames_per_chunk,
            "state_names": list(spec.state_names),
            "prompts": spec.prompts(),
            "args": {**asdict(cfg), "max_frames": max_frames},
            "num_episodes": sum(s["episodes"] for s in listed),
            "num_frames": sum(s["frames"] for s in listed),
            "shards": listed,
        }
        _write_json(manifest_path, manifest)
        return manifest

    from tqdm import tqdm

    bar = tqdm(total=cfg.episodes, initial=sum(s["episodes"] for s in shards.values()),
               unit="ep", desc=f"collect {spec.name}", disable=not progress)
    if cfg.workers > 1 and len(todo) > 1:
        with mp.get_context("spawn").Pool(min(cfg.workers, len(todo))) as pool:
            for s in pool.imap_unordered(_make_shard, todo):
                shards[s["index"]] = s
                save()
                bar.update(s["episodes"])
    else:
        for task in todo:
            s = _make_shard(task)
            shards[s["index"]] = s
            save()
            bar.update(s["episodes"])
    bar.close()
    manifest = save()
    write_card(cfg.out, manifest, spec, cfg.min_seconds)
    return manifest


# ----------------------------------------------------------------------------- card


def _mix(values: list[str]) -> str:
    names, counts = np.unique(values, return_counts=True)
    return ", ".join(f"{n} {c} ({100 * c / len(values):.0f}%)" for n, c in zip(names, counts))


def write_card(out: str, manifest: dict[str, Any], spec: WorldSpec, min_seconds: float = 10.0) -> str:
    eps = [e for s in manifest["shards"] for e in s["episode_summaries"]]
    secs = np.array([e["seconds"] for e in eps])
    counts: dict[str, float] = {}
    for e in eps:
        for k, v in e["action_counts"].items():
            if k not in ("mean", "frac_positive"):
                counts[k] = counts.get(k, 0) + v
    if counts:
        total = sum(counts.values())
        balance = ", ".join(f"action {k}: {100 * v / total:.1f}%" for k, v in sorted(counts.items()))
    else:
        fp = np.average([e["action_counts"]["frac_positive"] for e in eps], weights=[e["frames"] for e in eps])
        balance = f"fraction of positive actions: {100 * fp:.1f}%"
    term_eps = [e for e in eps if e["first_terminated_frame"] >= 0]
    total_frames = int(sum(e["frames"] for e in eps))
    frac_long = float((secs >= min_seconds).mean()) if len(secs) else 0.0
    lines = [
        f"# Data card: {spec.name}",
        "",
        f"- env: `{spec.env_id}`, frames {spec.frame_height}x{spec.frame_width} at {spec.fps} fps, "
        f"{spec.frames_per_chunk} frames per chunk (one action per chunk)",
        f"- seed {manifest['seed']}, max frames per episode {manifest['max_frames']}, "
        f"{len(manifest['shards'])} shards",
        f"- episodes: {len(eps)}, frames: {total_frames} ({total_frames / spec.fps / 60:.1f} min)",
        f"- length (s): min {secs.min():.1f}, median {np.median(secs):.1f}, max {secs.max():.1f}; "
        f"fraction >= {min_seconds:g} s: {100 * frac_long:.0f}% of episodes, "
        f"{100 * secs[secs >= min_seconds].sum() / max(secs.sum(), 1e-9):.0f}% of frames" if len(secs) else "- length: n/a",
        f"- action balance (unmasked frames): {balance}",
        f"- variant mix: {_mix([e['variant'] for e in eps])}",
        f"- policy mix: {_mix([e['policy'] for e in eps])}",
        f"- termination: {len(term_eps)}/{len(eps)} episodes reach the standard termination "
        f"(median first at {np.median([e['first_terminated_frame'] for e in term_eps]) / spec.fps:.1f} s)"
        if term_eps else f"- termination: 0/{len(eps)} episodes reach the standard termination",
        f"- frames flagged terminated (standard rule, run-on): "
        f"{100 * sum(e['terminated_frames'] for e in eps) / max(total_frames, 1):.1f}%; "
        f"episodes ending terminated: {sum(e['ends_terminated'] for e in eps)}, "
        f"truncated: {sum(not e['ends_terminated'] for e in eps)}",
        "",
        "Every episode starts with a still chunk (the initial frame repeated, action_mask False).",
        "Prompts:",
        *[f"- `{k}`: {v}" for k, v in spec.prompts().items()],
        "",
    ]
    try:  # coverage needs the episodes themselves (state, actions), not just the manifest
        from distill.coverage import coverage, coverage_markdown
        from distill.dataset import EpisodeDataset
        lines += coverage_markdown(coverage(EpisodeDataset(out, verify=False, frames=False).episodes, spec)) + [""]
    except (ValueError, OSError) as err:  # a card is still written for a partial collection
        lines += ["", f"(coverage not computed: {err})", ""]
    path = os.path.join(out, "CARD.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    if len(secs) and frac_long < 0.25:
        print(f"warning: only {100 * frac_long:.0f}% of episodes last >= {min_seconds:g} s", file=sys.stderr)
    return path


# ----------------------------------------------------------------------------- cli


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", default="cartpole")
    p.add_argument("--out", required=True, help="output directory (re-run to resume)")
    p.add_argument("--episodes", type=int, required=True, help="total number of episodes")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-frames", type=int, default=1000, help="frame cap per episode (rounded down to chunks)")
    p.add_argument("--episodes-per-shard", type=int, default=8)
    p.add_argument("--min-seconds", type=float, default=10.0,
                   help="length threshold reported in CARD.md (warns if under a quarter of the episodes reach it)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    cfg = CollectConfig(world=a.world, out=a.out, episodes=a.episodes, workers=a.workers, seed=a.seed,
                        max_frames=a.max_frames, episodes_per_shard=a.episodes_per_shard,
                        min_seconds=a.min_seconds)
    manifest = collect(cfg, progress=not a.no_progress)
    print(f"{manifest['num_episodes']} episodes, {manifest['num_frames']} frames in {cfg.out}")
    return manifest


if __name__ == "__main__":
    main()
