"""Micro-benchmark: one chunk with the KV cache vs recomputing the whole 10 s context.

    python examples/kv_cache_benchmark.py [--size S] [--context-frames 125] [--repeats 5] [--quick]

Builds the default DiT size ("S", random weights: timing does not depend on them) for the default
world's latents (8 x 8 x 12, patch 2 -> 24 tokens per latent frame; 10 s at 50 fps with 4 frames per
latent frame = 125 latent frames = 3000 tokens of context) and, in one run, times per chunk:
- cache: the student's 4 denoising passes of the new chunk attending to the cached keys/values,
  plus the clean pass that writes them (what `CausVidEnv.step` runs);
- recompute: 4 full block-causal forwards over context + chunk (what a model without a cache runs).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

import torch

from causvid_env.worlds import get_world
from evaluation.benchmarks import kv_cache_vs_recompute, peak_rss_mb
from models.io import write_json
from models.actions import space_to_dict
from models.config_utils import add_dataclass_args
from models.dit import DiT, DiTConfig


@dataclass
class Args:
    size: str = "S"
    """DiT size (models.dit.DIT_SIZES)"""
    context_frames: int = 125
    """latent frames of context (125 = 10 s of the default world)"""
    steps: int = 4
    """student denoising steps per chunk"""
    repeats: int = 5
    batch: int = 1
    threads: int = 1
    quick: bool = False
    """tiny model and context for a smoke test"""
    json: str | None = None
    """optional path for the result"""


def run(a: Args) -> dict:
    torch.set_num_threads(a.threads)
    if a.quick:
        a.size, a.context_frames, a.repeats = "tiny", 8, 1
    spec = get_world("cartpole")
    torch.manual_seed(0)
    model = DiT(DiTConfig.from_size(a.size, action_space=space_to_dict(spec.make_action_space()),
                                    frames_per_latent=spec.frames_per_latent, latent_frames_per_chunk=spec.latent_frames_per_chunk)).eval()
    res = kv_cache_vs_recompute(model, a.context_frames, a.steps, a.repeats, a.batch)
    res.update(kind="kv_cache_benchmark", args=asdict(a), params_M=sum(p.numel() for p in model.parameters()) / 1e6,
               context_seconds=a.context_frames * spec.frames_per_latent / spec.fps, peak_rss_MiB=peak_rss_mb(),
               torch_threads=torch.get_num_threads())
    if a.json:
        write_json(a.json, res)
    return res


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_dataclass_args(p, Args)
    res = run(Args(**vars(p.parse_args(argv))))
    print(f"DiT {res['args']['size']} ({res['params_M']:.2f}M params), context {res['context_latent_frames']} latent frames "
          f"({res['context_seconds']:g} s, {res['tokens_in_context']} tokens), {res['steps']} steps, batch {res['batch']}, "
          f"{res['torch_threads']} thread(s)")
    print(f"  KV cache : {res['cache_ms_per_chunk']:8.1f} ms per chunk")
    print(f"  recompute: {res['recompute_ms_per_chunk']:8.1f} ms per chunk")
    print(f"  ratio    : {res['recompute_over_cache']:8.1f}x")
    print(json.dumps({k: res[k] for k in ("cache_ms_per_chunk", "recompute_ms_per_chunk", "recompute_over_cache")}))
    return res


if __name__ == "__main__":
    main()
