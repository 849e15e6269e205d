"""Open-loop scripts in the dream and in the real twin: how long a fixed action script keeps the pole up.

An agent trained in a dream maximises the dream's reward. If a script that never looks at the frames
(hold left, alternate, wiggle left-right-right-left, ...) keeps the dream's pole up longer than any
script keeps the real pole, PPO can find that script and learn a policy that does not transfer: in
the dream of d1's EMA at 500 DMD steps the wiggle keeps the pole up 52 frames against 35 in the real
CartPole, and PPO there settled on exactly that wiggle within 5,000 decisions (32.3 real frames at
every check). This gate plays the same scripts from the same real starts in the real twin and in the
dream (image resets, as agents train and `agents.evaluate` scores) and reports survival, the frames up
to the first terminating one, per script in each. The headline is the free reward: the longest mean
survival of any script in the dream over the longest in the real twin; a dream passes when it is at
most `--limit` (default 1.3) and it ranks a policy that balances the real pole (`--policy`, default the
shipped one: 480+ real frames against 35 for the best script) above every script, as the real world
does. Measured: the dreams that trained PPO into feedback policies (v7, v8) rank the shipped policy
first (44.1 / 43.0 frames against their best scripts' 36.4 / 23.8); the two that trained PPO into the
wiggle (d1's EMA at 500 and at 600) rank the wiggle first (52.4 / 41.8 frames against 29.8-34.7 / 28.0
for the policy). Per-script ratios are reported beside it (a script that dies in 9 real frames and 12
dream ones is a large ratio but little reward to find).

    python -m evaluation.script_survival --json out.json                          # the shipped checkpoint
    python -m evaluation.script_survival --checkpoint runs/ck/x --starts 20 --json out.json --plot out.png
    python -m evaluation.script_survival --student runs/d1/dmd_self_forcing/model_step500 --student DIR2 --json out.json
"""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace

import numpy as np
from tqdm import tqdm

from agents.evaluate import _make_env, make_agent, reset_episode, resolve_policy
from causvid_env.checkpoint import WorldModel, default_checkpoint_dir, load_world_model
from causvid_env.engine import sampling_temperature
from causvid_env.real_env import RealWorldEnv
from causvid_env.worlds import get_world
from models.dit import DiT
from models.io import write_json

# name -> the chunk actions repeated; None: a fresh random script per start (seeded, shared by the real twin and the dream)
SCRIPTS: dict[str, tuple[int, ...] | None] = {
    "left": (0,), "right": (1,), "alternate": (0, 1), "wiggle": (0, 1, 1, 0), "wiggle_reversed": (1, 0, 0, 1),
    "pairs": (0, 0, 1, 1), "random": None,
}


def script_actions(name: str, chunks: int, start_seed: int) -> list[int]:
    """The first `chunks` actions of script `name` for the start with seed `start_seed`."""
    if name not in SCRIPTS:
        raise ValueError(f"scripts: unknown script {name!r}; expected some of {', '.join(SCRIPTS)}")
    pattern = SCRIPTS[name]
    if pattern is None:
        return [int(a) for a in np.random.default_rng(10_000 + start_seed).integers(0, 2, chunks)]
    return [pattern[i % len(pattern)] for i in range(chunks)]


def frames_until_end(info: dict, frames_per_chunk: int) -> tuple[int, bool]:
    """Frames of one step up to and including the first terminating one (only frames that happened,
    `frame_valid`, in the real twin), and whether the step terminated."""
    term = np.asarray(info["frame_terminated"], dtype=bool)
    valid = np.asarray(info.get("frame_valid", np.ones(frames_per_chunk, dtype=bool)), dtype=bool)
    if term.any():
        return int(np.argmax(term)) + 1, True
    return int(valid.sum()), False


def episode_frames(env, where: str, seed: int, spec, starts: RealWorldEnv | None, act, chunks: int) -> int:
    """Frames one episode survives: reset as `agents.evaluate` does (`where` 'real', or 'dream' from the
    real twin `starts`' reset frame for `seed`), then `act(i, obs, info)` for chunk i until it ends."""
    obs, info = reset_episode(env, where, seed, spec, real_starts=starts)
    total = 0
    for i in range(chunks):
        obs, _, terminated, truncated, info = env.step(act(i, obs, info))
        n, ended = frames_until_end(info, spec.frames_per_chunk)
        total += n
        if ended or terminated or truncated:
            break
    return total


def _envs(model: WorldModel | None, world: str, chunks: int, temperature: float | None, obs_mode: str = "chunk",
          frame_stack: int = 1):
    """(env, where, starts): the real twin, or the dream of `model` with a real twin for its image resets."""
    where = "real" if model is None else "dream"
    env = _make_env(world, where, variant=None, checkpoint=model, device="cpu", max_steps=chunks, obs_mode=obs_mode,
                    frame_stack=frame_stack, temperature=temperature)
    return env, where, (None if model is None else RealWorldEnv(world))


def survival(model: WorldModel | None, world: str, scripts: list[str], seeds: list[int], chunks: int,
             temperature: float | None = None, progress: bool = True, label: str = "") -> dict[str, list[int]]:
    """{script: frames survived per start}: the real twin when `model` is None, else the dream of `model`."""
    spec = get_world(world)
    env, where, starts = _envs(model, world, chunks, temperature)
    out = {}
    with tqdm(total=len(scripts) * len(seeds), desc=f"script survival {label or where}", disable=not progress) as bar:
        for name in scripts:
            out[name] = []
            for s in seeds:
                script = script_actions(name, chunks, s)
                out[name].append(episode_frames(env, where, s, spec, starts, lambda i, obs, info: script[i], chunks))
                bar.update()
    env.close()
    if starts is not None:
        starts.close()
    return out


def policy_survival(model: WorldModel | None, world: str, seeds: list[int], chunks: int, policy: str = "shipped",
                    temperature: float | None = None) -> list[int]:
    """Frames `policy` (see `agents.evaluate.make_agent`) keeps the pole up from each start, acting on
    what it sees: the real twin when `model` is None, else the dream from the real reset frame (as
    `agents.evaluate` starts its dream episodes)."""
    spec = get_world(world)
    pol = resolve_policy(policy, world)
    cfg = getattr(pol, "config", None)
    env, where, starts = _envs(model, world, chunks, temperature, cfg.obs_mode if cfg else "chunk", cfg.frame_stack if cfg else 1)
    agent = make_agent(pol, env.action_space, deterministic=True)
    out = [episode_frames(env, where, s, spec, starts, lambda i, obs, info: agent(obs, info), chunks) for s in seeds]
    env.close()
    if starts is not None:
        starts.close()
    return out


def compare(real: dict[str, list[int]], dream: dict[str, list[int]], limit: float,
            policy_real: list[int] | None = None, policy_dream: list[int] | None = None) -> dict:
    """Per script the mean survival in each, the ratio dream / real and the share of starts the dream
    outlives; the free reward (the best script's mean in the dream over the best one's in the real
    twin); with a policy's survival in both, whether the dream ranks it above every script as the real
    twin does. `passes`: the free reward is at most `limit` and (with a policy) the ranking holds."""
    rows = {}
    for name, r in real.items():
        d = np.asarray(dream[name], dtype=float)
        r = np.asarray(r, dtype=float)
        rows[name] = {"real_mean": float(r.mean()), "real_std": float(r.std()), "dream_mean": float(d.mean()),
                      "dream_std": float(d.std()), "ratio": float(d.mean() / max(r.mean(), 1e-9)),
                      "dream_outlives_share": float(np.mean(d > r)), "real": r.astype(int).tolist(), "dream": d.astype(int).tolist()}
    worst = max(rows, key=lambda k: rows[k]["ratio"])
    best_real = max(rows, key=lambda k: rows[k]["real_mean"])
    best_dream = max(rows, key=lambda k: rows[k]["dream_mean"])
    free = rows[best_dream]["dream_mean"] / max(rows[best_real]["real_mean"], 1e-9)
    res = {"scripts": rows, "worst_script": worst, "worst_ratio": rows[worst]["ratio"],
           "best_real_script": best_real, "best_real_frames": rows[best_real]["real_mean"],
           "best_dream_script": best_dream, "best_dream_frames": rows[best_dream]["dream_mean"],
           "free_reward_ratio": float(free), "limit": limit, "passes": bool(free <= limit)}
    if policy_dream is not None:
        pd, pr = float(np.mean(policy_dream)), float(np.mean(policy_real)) if policy_real is not None else None
        res["policy"] = {"real": [int(v) for v in policy_real] if policy_real is not None else None, "dream": [int(v) for v in policy_dream],
                         "real_mean": pr, "dream_mean": pd, "dream_std": float(np.std(policy_dream)),
                         "over_best_script_dream": pd / max(res["best_dream_frames"], 1e-9),
                         "over_best_script_real": pr / max(res["best_real_frames"], 1e-9) if pr is not None else None}
        res["ranks_policy_first"] = bool(pd > res["best_dream_frames"])
        res["passes"] = bool(res["passes"] and res["ranks_policy_first"])
    return res


def plot_survival(res: dict, path: str) -> None:
    """Frames each script survives in every model's dream (bars) and in the real twin (black ticks), with
    the free-reward limit (the best real script's frames times the limit) dashed; with a ranked policy,
    its frames in each dream as a last group (its real figure, far above, written under it)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(res["models"])
    first = next(iter(res["models"].values()))
    scripts = list(first["scripts"])
    ranked = "policy" in first
    groups = scripts + (["policy"] if ranked else [])
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(models)
    x = np.arange(len(groups))
    for i, m in enumerate(models):
        row = res["models"][m]
        heights = [row["scripts"][k]["dream_mean"] for k in scripts] + ([row["policy"]["dream_mean"]] if ranked else [])
        ax.bar(x + (i - (len(models) - 1) / 2) * width, heights, width, label=m.split("/")[-1])
    ax.scatter(x[:len(scripts)], [first["scripts"][k]["real_mean"] for k in scripts], marker="_", s=900, color="k", lw=2.5,
               label="real twin", zorder=3)
    ax.axhline(first["best_real_frames"] * first["limit"], color="k", ls="--", lw=0.8,
               label=f"{first['limit']:g}x the best real script")
    labels = scripts + ([f"{res.get('policy') or 'policy'} policy\n(real {first['policy']['real_mean']:.0f})"] if ranked else [])
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("frames survived (mean)")
    ax.set_title(f"open-loop scripts from {res['starts']} real starts: the dream's free reward")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def one_line(name: str, res: dict) -> str:
    cells = ", ".join(f"{k} {v['dream_mean']:.1f} vs {v['real_mean']:.1f} ({v['ratio']:.2f}x)" for k, v in res["scripts"].items())
    pol = (f"; the policy {res['policy']['dream_mean']:.1f} frames in the dream ({res['policy']['over_best_script_dream']:.2f}x "
           f"the best script; real {res['policy']['over_best_script_real']:.1f}x)") if "policy" in res else ""
    return (f"{name}: {cells}; best script in the dream {res['best_dream_script']} {res['best_dream_frames']:.1f} frames vs "
            f"{res['best_real_script']} {res['best_real_frames']:.1f} in real: free reward {res['free_reward_ratio']:.2f}x{pol}  "
            f"{'PASS' if res['passes'] else 'FAIL'}")


def add_dream_arguments(p: argparse.ArgumentParser, starts: int, chunks: int, chunks_help: str, scripts: str) -> None:
    """The arguments every script-playing evaluation shares: which dreams, which real starts, which scripts."""
    p.add_argument("--checkpoint", default=None, help="world-model checkpoint (default: the shipped one); also supplies "
                                                      "the VAE, heads, probe and temperature for --student")
    p.add_argument("--student", action="append", default=[], help="student weights (a DiT directory) in the checkpoint's "
                                                                   "place; repeatable (the real twin is played once)")
    p.add_argument("--world", default="cartpole")
    p.add_argument("--starts", type=int, default=starts, help="real starts (reset seeds FIRST..FIRST+N-1)")
    p.add_argument("--first-seed", type=int, default=0, help="the first start's reset seed (another set of starts: e.g. 100)")
    p.add_argument("--chunks", type=int, default=chunks, help=f"episode cap in chunks ({chunks_help})")
    p.add_argument("--scripts", default=scripts, help=f"comma list of {', '.join(SCRIPTS)}")
    p.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: the checkpoint's)")


def check_dream_arguments(p: argparse.ArgumentParser, a: argparse.Namespace, extra: tuple[str, ...] = ()) -> list[str]:
    """Refuse bad starts, chunks and scripts (names of `SCRIPTS` or `extra`) with the argument's name; -> the scripts."""
    if a.starts < 1:
        p.error(f"--starts: must be >= 1, got {a.starts}")
    if a.chunks < 1:
        p.error(f"--chunks: must be >= 1, got {a.chunks}")
    if a.first_seed < 0:
        p.error(f"--first-seed: must be >= 0, got {a.first_seed}")
    scripts = [s.strip() for s in a.scripts.split(",") if s.strip()]
    known = list(SCRIPTS) + list(extra)
    unknown = [s for s in scripts if s not in known]
    if not scripts or unknown:
        p.error(f"--scripts: unknown {unknown or 'empty list'}; expected some of {', '.join(known)}")
    return scripts


def dream_models(a: argparse.Namespace) -> tuple[str, list]:
    """(checkpoint, [(name, WorldModel)]): each --student in the checkpoint's place, else the checkpoint itself."""
    ckpt = a.checkpoint or str(default_checkpoint_dir(a.world))
    base = load_world_model(ckpt, world=a.world)
    models = [(f"student {s}", replace(base, student=DiT.from_pretrained(s).eval())) for s in a.student]
    return ckpt, models or [(f"checkpoint {ckpt}", base)]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m evaluation.script_survival", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dream_arguments(p, starts=20, chunks=125, chunks_help="125 = 500 CartPole frames", scripts=",".join(SCRIPTS))
    p.add_argument("--limit", type=float, default=1.3, help="the largest free reward (best dream script / best real script) that passes")
    p.add_argument("--policy", default="shipped", help="a policy the dream must rank above every script: 'shipped', a policy "
                                                       "directory, or 'none'")
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None, help="a PNG: frames per script in every dream and the real twin")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    a = p.parse_args(argv)
    scripts = check_dream_arguments(p, a)
    if a.policy in ("balancing", "random"):
        p.error(f"--policy: {a.policy!r} cannot be ranked in a dream ('balancing' reads the simulator's state, which a "
                f"dream does not have; 'random' is a script); pass 'shipped', a policy directory or 'none'")
    ckpt, models = dream_models(a)
    seeds = list(range(a.first_seed, a.first_seed + a.starts))
    real = survival(None, a.world, scripts, seeds, a.chunks, progress=a.progress, label="real")
    use_policy = a.policy != "none"
    policy_real = policy_survival(None, a.world, seeds, a.chunks, a.policy) if use_policy else None
    res = {"kind": "script_survival", "world": a.world, "checkpoint": ckpt, "starts": a.starts, "seeds": seeds, "chunks": a.chunks,
           "policy": a.policy if use_policy else None,
           "reset": "image (the real twin's reset frame for seed i, the default variant's prompt)", "models": {}}
    for name, model in models:
        dream = survival(model, a.world, scripts, seeds, a.chunks, temperature=a.temperature, progress=a.progress, label=name)
        policy_dream = policy_survival(model, a.world, seeds, a.chunks, a.policy, a.temperature) if use_policy else None
        res["models"][name] = compare(real, dream, a.limit, policy_real, policy_dream)
        res["models"][name]["temperature"] = sampling_temperature(model, a.temperature)
        print(one_line(name, res["models"][name]), flush=True)
    res["command"] = "python -m evaluation.script_survival " + shlex.join(argv if argv is not None else sys.argv[1:])
    if a.json:
        write_json(a.json, res)
    if a.plot:
        plot_survival(res, a.plot)
    return res


if __name__ == "__main__":
    main()
