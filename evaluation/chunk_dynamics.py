"""The chunk-dynamics gate: does a model answer the chunk-to-chunk action changes an agent makes the
way the real simulator does?

The held-push gate (`evaluation.push_response`) holds one action for 12 frames. An agent balancing
the pole switches its push every chunk or two, and what it needs from a world model is the
response to each switch. From N real starts (a 16-frame real clip, so velocities are visible, or a
still image) every model and the real simulator play the same random scripts (each chunk keeps the
previous push with probability 1/2, else draws a fresh one: `distill.batches.random_chunk_actions`)
for `chunks` chunks. The state probe reads the pole angle off the last frame of every chunk, and a
linear model of one chunk's change in angle is fitted to each player's readings:

    d_t = a * u_t + b * u_(t-1) + c * d_(t-1) + e * theta_(t-1) + bias,   u = +1 (right) / -1 (left)

(d_t = theta_t - theta_(t-1) in degrees). For the real simulator (read by the same probe) a, b and
c are the push response, the push's carry-over into the next chunk and the pole's momentum. Each
model's coefficients are reported as ratios to the real ones, with the residual's standard
deviation (degrees per chunk: noise the model adds that no action explains) and the per-chunk
angle error against the real frames next to repeat-last-frame. Chunks after the real or the
model's pole passes 12 degrees leave the fit (past the termination limit the dynamics change).
The VAE bound is fitted beside the models: the real frames encoded and decoded as the env streams
them. Its four frames per latent smear the pole's motion inside a chunk, so even it answers a
switch late (measured: push 0.73-0.77x, carry-over 1.13-1.32x on the shipped VAE); a model is read
against both.

    python -m evaluation.chunk_dynamics --checkpoint causvid_env/checkpoints/cartpole --json out.json
    python -m evaluation.chunk_dynamics --student runs/x/dmd_self_forcing/model --teacher runs/x/teacher/model --json out.json

The gate passes when a, b and c are each within +-30% of the real ones.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from causvid_env.checkpoint import WorldModel, default_checkpoint_dir, load_world_model
from causvid_env.engine import sampling_temperature
from causvid_env.env import CausVidEnv
from causvid_env.rendering import Simulator
from causvid_env.worlds import get_world
from distill.batches import random_chunk_actions
from evaluation.probe import load_probe
from evaluation.push_response import PROTOCOLS, TOLERANCE, Start, real_starts, teacher_continuations
from evaluation.rollouts import PromptTexts, _encode_episode_latents
from models.actions import ActionCodec
from models.dit import DiT
from models.io import write_json
from models.vae import tensor_to_frames

__all__ = ["random_scripts", "real_script_frames", "vae_script_frames", "student_script_frames", "teacher_script_frames", "fit_chunk_dynamics",
           "ratio_intervals", "ratio_draws", "draw_interval", "chunk_dynamics_report", "COEFFICIENTS"]

COEFFICIENTS = ("push", "push_carry_over", "momentum", "lean_gain", "bias")  # a, b, c, e, bias
GATED = ("push", "push_carry_over", "momentum")
LIMIT_DEG = 12.0


def random_scripts(n: int, chunks: int, seed: int = 0, p_keep: float = 0.5) -> np.ndarray:
    """(n, chunks) CartPole actions (0 left, 1 right): each chunk keeps the last push with probability `p_keep`."""
    codec = ActionCodec({"type": "Discrete", "n": 2, "start": 0})
    rng = np.random.default_rng([seed, 41])
    return np.stack([random_chunk_actions(codec, chunks, 1, rng, p_keep).argmax(1) for _ in range(n)])


def real_script_frames(world: str, starts: list[Start], scripts: np.ndarray, every_frame: bool = False) -> np.ndarray:
    """The real simulator from each start's state playing its script: the last frame of every chunk
    (N, chunks, H, W, 3), or with `every_frame` all of them (N, chunks * F, H, W, 3)."""
    spec = get_world(world)
    out = []
    for st, script in zip(starts, scripts):
        sim = Simulator(spec, st.variant)
        sim.reset(seed=st.seed)
        sim.set_state(st.state)
        frames = []
        for a in script:
            for _ in range(spec.frames_per_chunk):
                frame, _, _, _ = sim.step(int(a), run_on=True)
                frames.append(frame)
        sim.close()
        frames = np.stack(frames)
        out.append(frames if every_frame else frames[spec.frames_per_chunk - 1::spec.frames_per_chunk])
    return np.stack(out)


@torch.no_grad()
def vae_script_frames(vae, starts: list[Start], real_frames: np.ndarray, frames_per_chunk: int) -> np.ndarray:
    """The VAE bound: each start's prefix and its real script frames (N, chunks * F, ...) encoded and
    decoded as the env streams them; the last frame of every chunk. No model shows more than this."""
    out = []
    for st, seq in zip(starts, real_frames):
        z = _encode_episode_latents(vae, np.concatenate([st.frames, seq]))
        dec = tensor_to_frames(vae.decode(z))[0, len(st.frames):]
        out.append(dec[frames_per_chunk - 1::frames_per_chunk])
    return np.stack(out)


def student_script_frames(model: WorldModel, world: str, starts: list[Start], scripts: np.ndarray, seed: int = 0,
                          temperature: float | None = None) -> np.ndarray:
    """The student through the env (image reset for a still chunk, clip reset otherwise) playing each script
    (`temperature`: the env's, None the checkpoint's)."""
    env = CausVidEnv(world, checkpoint=model, max_episode_steps=10**6, run_on=True, temperature=temperature)
    F = env.F
    out = []
    for st, script in zip(starts, scripts):
        if len(st.frames) == F:
            env.reset(seed=seed + st.seed, options={"image": st.frames[-1], "prompt": st.prompt})
        else:
            env.reset(seed=seed + st.seed, options={"frames": st.frames, "actions": st.actions, "prompt": st.prompt})
        ends = []
        for a in script:
            obs, *_ = env.step(int(a))
            ends.append(obs[-1])
        out.append(np.stack(ends))
    env.close()
    return np.stack(out)


def teacher_script_frames(teacher: DiT, model: WorldModel, starts: list[Start], scripts: np.ndarray, *, num_steps: int = 20,
                          guidance_text: float = 1.5, guidance_action: float = 2.0, texts: PromptTexts | None = None,
                          seed: int = 0) -> np.ndarray:
    """The bidirectional teacher sampling each script's whole continuation at once (the prefix as clean
    context, the guided ODE sampler as in ODE pairs and DMD); the last frame of every chunk."""
    F = teacher.config.frames_per_latent
    k = len(starts[0].frames) // F
    frames = teacher_continuations(teacher, model, starts, scripts, num_steps=num_steps, guidance_text=guidance_text,
                                   guidance_action=guidance_action, texts=texts, seed=seed)
    return frames[:, k * F + F - 1::F][:, :scripts.shape[1]]


def fit_chunk_dynamics(angles: np.ndarray, start_angles: np.ndarray, scripts: np.ndarray, keep: np.ndarray | None = None) -> dict:
    """Least squares of d_t on (u_t, u_(t-1), d_(t-1), theta_(t-1), 1) over every chunk t >= 2 (chunk 1
    has no earlier change inside the script; `start_angles` is theta_0). `keep` (N, chunks) bool:
    chunks allowed in the fit. -> coefficients (COEFFICIENTS), residual sd, rows used."""
    th = np.concatenate([start_angles[:, None], angles], axis=1)  # (N, chunks + 1)
    u = 2.0 * scripts - 1.0
    X, y = [], []
    for i in range(len(th)):
        for t in range(2, th.shape[1]):
            if keep is not None and not keep[i, t - 1]:
                break
            X.append([u[i, t - 1], u[i, t - 2], th[i, t - 1] - th[i, t - 2], th[i, t - 1], 1.0])
            y.append(th[i, t] - th[i, t - 1])
    if len(y) < 2 * len(COEFFICIENTS):
        return {"rows": len(y), "coefficients": None, "residual_sd_deg": None}
    X, y = np.asarray(X), np.asarray(y)
    c, *_ = np.linalg.lstsq(X, y, rcond=None)
    return {"rows": len(y), "coefficients": dict(zip(COEFFICIENTS, c.round(4).tolist())), "residual_sd_deg": float((y - X @ c).std())}


def ratio_intervals(real: np.ndarray, model: np.ndarray, start_angles: np.ndarray, scripts: np.ndarray, *,
                    boots: int = 1000, level: float = 0.9, seed: int = 0) -> dict:
    """Bootstrap over starts: the gated ratios (model / real coefficient) refitted on `boots`
    resamples of the N starts, the real and the model's fit on the same resample (the chunks
    kept as in `chunk_dynamics_report`). -> {coefficient: [low, high]} at `level`, or None per
    coefficient when too few resamples could be fitted. `real`, `model`: (N, chunks) angles."""
    draws = ratio_draws(real, {"model": model}, start_angles, scripts, boots=boots, seed=seed)["model"]
    return {k: draw_interval(v, level) for k, v in draws.items()}


def draw_interval(draws: np.ndarray, level: float = 0.9) -> list[float] | None:
    """The central `level` interval of bootstrap draws (NaN: a resample that could not be fitted), or
    None when fewer than half of the draws could be fitted."""
    if np.isfinite(draws).sum() < len(draws) // 2:
        return None
    return np.nanpercentile(draws, [50 * (1 - level), 50 * (1 + level)]).round(3).tolist()


def ratio_draws(real: np.ndarray, models: dict[str, np.ndarray], start_angles: np.ndarray, scripts: np.ndarray, *,
                boots: int = 1000, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """The bootstrap draws behind `ratio_intervals` for several models at once: {model: {coefficient:
    (boots,) ratios}} (NaN where a resample could not be fitted). The real fit is done once per
    resample and every model is read on the same resamples, so their draws are paired."""
    real, th0, scripts = (np.asarray(x, np.float64) for x in (real, start_angles, scripts))
    keep_real = np.abs(real) < LIMIT_DEG
    models = {name: np.asarray(a, np.float64) for name, a in models.items()}
    keep = {name: keep_real & (np.abs(a) < LIMIT_DEG) for name, a in models.items()}
    rng = np.random.default_rng(seed)
    out = {name: {k: np.full(boots, np.nan) for k in GATED} for name in models}
    for b in range(boots):
        i = rng.integers(0, len(real), len(real))
        fr = fit_chunk_dynamics(real[i], th0[i], scripts[i], keep_real[i])["coefficients"]
        if not fr:
            continue
        for name, a in models.items():
            fm = fit_chunk_dynamics(a[i], th0[i], scripts[i], keep[name][i])["coefficients"]
            for k in GATED:
                if fm and fr[k]:
                    out[name][k][b] = fm[k] / fr[k]
    return out


def chunk_dynamics_report(probe, real_ends: np.ndarray, model_ends: dict[str, np.ndarray], last_context: np.ndarray,
                          scripts: np.ndarray) -> dict:
    """Fits for the real frames and every model (chunks where both the real and that model's pole are
    inside the limit), ratios to the real coefficients, and per-chunk angle errors next to repeat-last-frame."""
    N, n = scripts.shape
    read = lambda ends: probe.predict(ends.reshape(N * n, *ends.shape[2:]))[:, 0].reshape(N, n)
    real = read(real_ends)
    th0 = probe.predict(last_context)[:, 0]
    inside_real = np.abs(real) < LIMIT_DEG
    out = {"real": fit_chunk_dynamics(real, th0, scripts, inside_real),
           "repeat_last_frame_angle_error_deg": np.abs(real - th0[:, None]).mean(0).round(3).tolist(), "models": {},
           "angles_deg": {"start": th0.round(3).tolist(), "real": real.round(3).tolist()}}
    rc = out["real"]["coefficients"]
    angles = {name: read(ends) for name, ends in model_ends.items()}
    draws = ratio_draws(real, angles, th0, scripts)  # one bootstrap for every model: the real fit once per resample
    for name, got in angles.items():
        fit = fit_chunk_dynamics(got, th0, scripts, inside_real & (np.abs(got) < LIMIT_DEG))
        fit["angle_error_deg"] = np.abs(got - real).mean(0).round(3).tolist()
        out["angles_deg"][name] = got.round(3).tolist()
        if fit["coefficients"] and rc:
            fit["ratio"] = {k: (fit["coefficients"][k] / rc[k] if rc[k] else None) for k in GATED}
            fit["passes"] = all(v is not None and abs(v - 1.0) <= TOLERANCE for v in fit["ratio"].values())
            fit["ratio_ci90"] = {k: draw_interval(v) for k, v in draws[name].items()}
        else:
            fit["ratio"], fit["passes"] = None, False
        out["models"][name] = fit
    return out


def one_line(name: str, protocol: str, fit: dict, real: dict) -> str:
    if not fit.get("ratio"):
        return f"{name} [{protocol}]: too few chunks inside the limit to fit ({fit['rows']} rows)"
    r, c, rc = fit["ratio"], fit["coefficients"], real["coefficients"]
    ci = fit.get("ratio_ci90") or {}
    x = lambda k: f"{r[k]:.2f}x" + (f", 90% {ci[k][0]:.2f}-{ci[k][1]:.2f}" if ci.get(k) else "")
    return (f"{name} [{protocol}]: push {c['push']:+.2f} vs real {rc['push']:+.2f} ({x('push')}), carry-over "
            f"{c['push_carry_over']:+.2f} vs {rc['push_carry_over']:+.2f} ({x('push_carry_over')}), momentum "
            f"{c['momentum']:.2f} vs {rc['momentum']:.2f} ({x('momentum')}); residual {fit['residual_sd_deg']:.2f} vs "
            f"{real['residual_sd_deg']:.2f} deg/chunk; angle error at chunk 1/3/6 "
            + "/".join(f"{fit['angle_error_deg'][i]:.1f}" for i in (0, 2, min(5, len(fit['angle_error_deg']) - 1)))
            + ("  PASS" if fit["passes"] else "  fail"))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description="Chunk-to-chunk response to random push scripts, models next to the real simulator "
                                            "(a linear fit of each chunk's change in pole angle).")
    p.add_argument("--checkpoint", default=None, help="a world-model checkpoint: gates its student (and supplies VAE, heads)")
    p.add_argument("--student", action="append", default=[], help="extra student weights (a DiT directory); repeatable")
    p.add_argument("--teacher", action="append", default=[], help="teacher weights (a DiT directory); repeatable")
    p.add_argument("--world", default="cartpole")
    p.add_argument("--starts", type=int, default=72, help="real starts (24 moved the ratios by up to 0.15 against 72)")
    p.add_argument("--chunks", type=int, default=6, help="chunks per script (6 = 24 frames)")
    p.add_argument("--protocols", default="clip,image", help="comma list of start protocols (clip, image)")
    p.add_argument("--num-steps", type=int, default=20, help="teacher ODE steps")
    p.add_argument("--guidance-action", type=float, default=2.0, help="teacher action guidance scale")
    p.add_argument("--temperature", type=float, default=None,
                   help="scale of the students' noise draws (default: the checkpoint's, else 1.0, the trained one)")
    p.add_argument("--json", default=None)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    if a.world != "cartpole":
        raise ValueError(f"--world: the chunk-dynamics gate reads the pole angle; only 'cartpole' has it, got {a.world!r}")
    if a.starts < 4 or a.chunks < 3:
        raise ValueError(f"--starts >= 4 and --chunks >= 3 are needed for the fit, got {a.starts} and {a.chunks}")
    protocols = [x.strip() for x in a.protocols.split(",") if x.strip()]
    for x in protocols:
        if x not in PROTOCOLS:
            raise ValueError(f"--protocols: unknown protocol {x!r}; choose from {sorted(PROTOCOLS)}")
    torch.set_num_threads(a.threads)
    ckpt = Path(a.checkpoint) if a.checkpoint else default_checkpoint_dir(a.world)
    base = load_world_model(ckpt, world=a.world)
    probe, _ = load_probe(ckpt / "probe" if (ckpt / "probe" / "config.json").is_file() else default_checkpoint_dir(a.world) / "probe")
    players = []
    if a.checkpoint or not (a.student or a.teacher):
        players.append((f"student {ckpt}", base))
    for s in a.student:
        players.append((f"student {s}", replace(base, student=DiT.from_pretrained(s).eval())))
    teachers = [(f"teacher {t}", DiT.from_pretrained(t).eval()) for t in a.teacher]
    scripts = random_scripts(a.starts, a.chunks)
    result = {"kind": "chunk_dynamics", "command": "python -m evaluation.chunk_dynamics " + " ".join(sys.argv[1:] if argv is None else argv),
              "starts": a.starts, "chunks": a.chunks, "scripts": scripts.tolist(), "tolerance": TOLERANCE,
              "limit_deg": LIMIT_DEG, "temperature": sampling_temperature(base, a.temperature), "protocols": {}}
    texts = PromptTexts()
    for protocol in protocols:
        starts = real_starts(a.world, range(a.starts), protocol)
        real_all = real_script_frames(a.world, starts, scripts, every_frame=True)
        F = get_world(a.world).frames_per_chunk
        real = real_all[:, F - 1::F]
        ends = {"VAE bound (real frames encoded and decoded)": vae_script_frames(base.vae, starts, real_all, F)}
        ends.update({name: student_script_frames(m, a.world, starts, scripts, temperature=a.temperature) for name, m in players})
        for name, t in teachers:
            ends[name] = teacher_script_frames(t, base, starts, scripts, num_steps=a.num_steps, guidance_action=a.guidance_action,
                                               texts=texts)
        rep = chunk_dynamics_report(probe, real, ends, np.stack([st.frames[-1] for st in starts]), scripts)
        result["protocols"][protocol] = rep
        for name, fit in rep["models"].items():
            print(one_line(name, protocol, fit, rep["real"]), flush=True)
    if a.json:
        write_json(a.json, result)
    return result


if __name__ == "__main__":
    main()
