"""Scores of generated rollouts against the real twin: metrics per frame, pooled per horizon bin
(h_{i-1}, h_i] seconds over the frames where the twin is still running.

PSNR (all pixels and non-white pixels, from the pooled MSE), SSIM (`models.metrics`), the state
probe's error (pole angle, cart position) of the generated frame against the twin's true state,
reward error, and termination timing (the generator's first predicted terminal frame vs the
twin's first, counted among the first h seconds).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from evaluation.rollouts import Generated, RealRollout
from models.metrics import nonwhite_mask, psnr_from_mse, ssim_per_frame

@dataclass
class FrameScores:
    """Per generated frame of one episode (length n)."""
    se: np.ndarray  # mean squared error (all pixels)
    fg_se: np.ndarray  # summed squared error over non-white pixels (either frame)
    fg_n: np.ndarray  # number of those pixel-channels
    ssim: np.ndarray
    probe_err: np.ndarray | None  # (n, n_targets) |probe(generated) - true|
    reward_err: np.ndarray | None  # |reward_generated - reward_real|
    term_ok: np.ndarray | None  # generated termination flag == real flag


def score_frames(gen: Generated, ep: RealRollout, probe=None, block: int = 128) -> FrameScores:
    real = ep.frames[ep.F:]
    n = len(real)
    se, fg_se, fg_n = np.zeros(n), np.zeros(n), np.zeros(n)
    for s in range(0, n, block):  # blocks keep float64 copies small on long rollouts
        a, b = gen.frames[s:s + block], real[s:s + block]
        d2 = (a.astype(np.float64) - b.astype(np.float64)) ** 2  # (k, H, W, 3)
        m = np.broadcast_to((nonwhite_mask(a) | nonwhite_mask(b))[..., None], d2.shape)
        se[s:s + block] = d2.mean(axis=(1, 2, 3))
        fg_se[s:s + block] = (d2 * m).sum(axis=(1, 2, 3))
        fg_n[s:s + block] = m.sum(axis=(1, 2, 3))
    ss = ssim_per_frame(gen.frames, real)
    pe = None
    if probe is not None:
        pe = np.abs(probe.predict(gen.frames) - probe.targets(ep.states[ep.F:]))
    re = te = None
    if gen.rewards is not None:
        re = np.abs(gen.rewards - ep.rewards[ep.F:])
        te = gen.terminated == ep.terminated[ep.F:]
    return FrameScores(se, fg_se, fg_n, ss, pe, re, te)


def _first_within(t: int | None, H: int) -> int | None:
    return t if t is not None and t < H else None


def _return_upto(rewards: np.ndarray, first_term: int | None, H: int) -> float:
    """Episode return under gymnasium semantics within the first H frames: rewards up to and
    including the first terminal frame."""
    end = min(H, len(rewards)) if first_term is None else min(first_term + 1, H, len(rewards))
    return float(rewards[:end].sum())


def aggregate(scores: list[FrameScores], gens: list[Generated], episodes: list[RealRollout], horizons: Sequence[float],
              fps: int, target_names: Sequence[str] = ()) -> dict:
    """Per horizon h (seconds): frame metrics pooled over frames in (previous h, h] of all
    episodes still running; termination/return metrics over the first h seconds."""
    out = {}
    prev = 0
    for h in horizons:
        H = int(round(h * fps))
        sel = [(s, slice(prev, min(H, len(s.se)))) for s in scores]
        sel = [(s, sl) for s, sl in sel if sl.stop > sl.start]
        n_frames = sum(sl.stop - sl.start for _, sl in sel)
        row: dict = {"bin_seconds": [prev / fps, h], "episodes": len(sel), "frames": n_frames}
        if n_frames:
            mse = sum(float(s.se[sl].sum()) for s, sl in sel) / n_frames
            fg_n = sum(float(s.fg_n[sl].sum()) for s, sl in sel)
            fg_mse = sum(float(s.fg_se[sl].sum()) for s, sl in sel) / fg_n if fg_n else float("nan")
            row.update(psnr=psnr_from_mse(mse), psnr_fg=psnr_from_mse(fg_mse),
                       ssim=sum(float(s.ssim[sl].sum()) for s, sl in sel) / n_frames)
            if sel[0][0].probe_err is not None:
                pe = np.concatenate([s.probe_err[sl] for s, sl in sel])
                for j, name in enumerate(target_names):
                    row[f"{name}_err"] = float(pe[:, j].mean())
            if sel[0][0].reward_err is not None:
                row["reward_mae"] = float(np.concatenate([s.reward_err[sl] for s, sl in sel]).mean())
                row["term_frame_acc"] = float(np.concatenate([s.term_ok[sl] for s, sl in sel]).mean())
        if gens and gens[0].terminated is not None:
            # termination timing over the first h seconds (episodes that reached at least one frame)
            errs, missed, false, both_none, ret = [], 0, 0, 0, []
            for g, ep in zip(gens, episodes):
                Hi = min(H, ep.n)
                r, d = _first_within(ep.first_termination(), Hi), _first_within(g.first_termination(), Hi)
                if r is not None and d is not None:
                    errs.append(abs(d - r))
                elif r is not None:
                    missed += 1
                elif d is not None:
                    false += 1
                else:
                    both_none += 1
                ret.append(abs(_return_upto(g.rewards, g.first_termination(), Hi) - _return_upto(ep.rewards[ep.F:], ep.first_termination(), Hi)))
            n_ep = len(episodes)
            n_real = len(errs) + missed  # episodes whose real twin terminates within the horizon
            row.update(term_within_4_frames=sum(e <= 4 for e in errs) / n_real if n_real else None)
            row.update(term_timing_mae_frames=float(np.mean(errs)) if errs else None, term_both=len(errs),
                       term_missed=missed, term_false=false, term_agree=(len(errs) + both_none) / n_ep if n_ep else None,
                       return_mae=float(np.mean(ret)) if ret else None)
        out[horizon_key(h)] = row
        prev = H
    return out


def horizon_key(h: float) -> str:
    return f"{h:g}s"


def evaluate_methods(methods: dict[str, list[Generated]], episodes: list[RealRollout], horizons: Sequence[float], fps: int,
                     probe=None) -> tuple[dict, dict]:
    """-> ({method: {horizon: metrics}}, {method: [FrameScores per episode]})."""
    names = probe.config.target_names if probe is not None else ()
    table, per_frame = {}, {}
    for m, gens in methods.items():
        scores = [score_frames(g, ep, probe) for g, ep in zip(gens, episodes)]
        table[m] = aggregate(scores, gens, episodes, horizons, fps, names)
        per_frame[m] = scores
    if probe is not None:  # the probe on the real frames themselves: the floor of every probe error
        real = [Generated(ep.frames[ep.F:]) for ep in episodes]
        scores = [score_frames(g, ep, probe) for g, ep in zip(real, episodes)]
        table["real_frames (probe floor)"] = aggregate(scores, [], episodes, horizons, fps, names)
    return table, per_frame


def episode_summaries(episodes: list[RealRollout], gens: list[Generated] | None, fps: int) -> list[dict]:
    out = []
    for i, ep in enumerate(episodes):
        d = {"seed": ep.seed, "variant": ep.variant, "policy": ep.policy, "seconds": ep.n / fps,
             "real_first_termination_frame": ep.first_termination()}
        if gens is not None:
            d["dream_first_termination_frame"] = gens[i].first_termination()
        out.append(d)
    return out
