"""Stage: fine-tune the VAE's decoder alone; the encoder, and so every latent, stays as it was.

Why: a world model shows its latents through the decoder, so the decoder bounds every frame it
shows. The default VAE (900 steps) draws a pole leaning past ~20 degrees as a smudge: a real
16-frame clip pushed for 12 more frames, encoded and decoded, reads back only about half of the
real pole response (`evaluation.push_response`'s VAE bound). Poles that far over are rare in the
data (about 9% of frames lean past 12 degrees), so a share of every batch is drawn from clips in
which the pole leans past `large_angle_deg`. The teacher, the student, their KV caches and the
latent cache all live in the encoder's space: with the encoder frozen they all keep working, and
the fine-tuned decoder can replace the checkpoint's (`vae/`) without retraining anything else.

    python -m distill.finetune_vae_decoder --vae causvid_env/checkpoints/cartpole/vae --data runs/v4/data \\
        --out runs/v4/vae_decoder --steps 800     # measured: ~35 min on a core shared with another job; writes OUT/vae, OUT/DONE

Resumable (StageRunner): a killed run continues from its last `save_every` checkpoint.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from distill.dataset import EpisodeDataset
from distill.train_vae import lr_at, pixel_weights, reconstruct
from distill.training_utils import StageRunner
from models.io import write_json
from models.metrics import nonwhite_mask, psnr
from models.vae import CausalVAE, frames_to_tensor


@dataclass
class DecoderFinetuneConfig:
    steps: int = 1500
    batch_size: int = 16
    clip_frames: int = 8  # two latent frames: the causal temporal convs see a real previous frame
    lr: float = 3e-4
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    nonwhite_weight: float = 10.0  # as in the VAE stage: the cart and the 1.6 px pole are a few % of the pixels
    large_angle_deg: float = 15.0  # a clip is "large" when the pole leans past this somewhere in it ...
    large_fraction: float = 0.5  # ... and this share of every batch is drawn from such clips
    angle_index: int = 2  # the state dimension that holds the pole angle (radians; CartPole)
    chunk_end_weight: float = 1.0  # loss weight of the last frame of every chunk (the frame an agent reads; 4 frames
    # per latent smear the pole's motion there most)
    seed: int = 0
    save_every: int = 100
    log_every: int = 10
    heldout_clips: int = 64


class AngleWeightedClips:
    """Chunk-aligned clips of `clip_frames` from `episodes` (indices into `dataset`), a share of them
    from the clips whose pole leans past a threshold somewhere (each group uniform)."""

    def __init__(self, dataset: EpisodeDataset, episodes: list[int], cfg: DecoderFinetuneConfig):
        self.dataset, self.cfg = dataset, cfg
        index = dataset.clip_index(cfg.clip_frames)
        index = index[np.isin(index[:, 0], episodes)]
        if len(index) == 0:
            raise ValueError(f"episodes: none of the {len(episodes)} episodes holds a {cfg.clip_frames}-frame clip")
        lim = math.radians(cfg.large_angle_deg)
        large = np.array([np.abs(dataset[int(e)].states[s:s + cfg.clip_frames, cfg.angle_index]).max() > lim for e, s in index])
        self.all, self.large = index, index[large]
        self.large_share_in_data = float(large.mean())

    def sample(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        n_large = int(rng.binomial(batch_size, self.cfg.large_fraction)) if len(self.large) else 0
        picks = np.concatenate([self.large[rng.integers(len(self.large), size=n_large)] if n_large else np.zeros((0, 2), int),
                                self.all[rng.integers(len(self.all), size=batch_size - n_large)]])
        return self.frames(picks)

    def frames(self, picks: np.ndarray) -> np.ndarray:
        """(N, 2) (episode, start) rows -> uint8 clips (N, T, H, W, 3)."""
        return np.stack([self.dataset.clip(int(e), int(s), self.cfg.clip_frames)["frames"] for e, s in picks])


@torch.no_grad()
def reconstruction_psnr(vae: CausalVAE, clips: np.ndarray, batch_size: int = 16) -> dict[str, float]:
    """PSNR (dB) of encode + decode over uint8 clips (N, T, H, W, 3): all pixels, and the non-white ones
    (the cart and the pole, which the white background would otherwise drown)."""
    rec = reconstruct(vae, clips, batch_size, next(vae.parameters()).device)
    return {"psnr": float(psnr(rec, clips)), "psnr_nonwhite": float(psnr(rec, clips, mask=nonwhite_mask(clips)))}


def finetune_decoder(vae: CausalVAE, clips: AngleWeightedClips, cfg: DecoderFinetuneConfig, stage_dir,
                     heldout: AngleWeightedClips | None = None) -> dict:
    """Train `vae.decoder` in place (the encoder frozen); writes `stage_dir/vae` and DONE. Returns the summary."""
    runner = StageRunner(stage_dir, "vae_decoder", cfg, distributed=False)
    if runner.done:
        return {}
    vae.encoder.requires_grad_(False)
    opt = torch.optim.AdamW(vae.decoder.parameters(), lr=cfg.lr)
    runner.resume({"decoder": vae.decoder}, {"opt": opt})
    held = {}
    if heldout is not None:  # fixed held-out clips (all, and those leaning past the threshold), drawn with their own seed
        r = np.random.default_rng([cfg.seed, 1])
        held["all"] = heldout.frames(heldout.all[r.integers(len(heldout.all), size=cfg.heldout_clips)])
        if len(heldout.large):
            held["large_angle"] = heldout.frames(heldout.large[r.integers(len(heldout.large), size=cfg.heldout_clips)])
    before = {k: reconstruction_psnr(vae.eval(), v) for k, v in held.items()}

    def train_step(step: int, rng: np.random.Generator):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        frames = clips.sample(cfg.batch_size, rng)
        x = frames_to_tensor(frames)
        with torch.no_grad():
            z = vae.encode(x)
        vae.decoder.train()
        x_hat = vae.decode(z)
        w = pixel_weights(frames, cfg.nonwhite_weight, x.device)
        if cfg.chunk_end_weight != 1.0:
            F = vae.config.temporal_down
            w[:, :, F - 1::F] *= cfg.chunk_end_weight
        loss = (w * (x_hat - x).pow(2)).mean() / w.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(vae.decoder.parameters(), cfg.grad_clip)
        opt.step()
        return ({"vae_decoder/loss": loss.item(), "vae_decoder/grad_norm": float(gnorm), "vae_decoder/lr": lr_at(step, cfg)},
                {"loss": f"{loss.item():.4f}"})

    steps = runner.run(train_step)
    vae.eval()
    summary = {"steps": steps, "large_angle_deg": cfg.large_angle_deg, "large_share_in_data": clips.large_share_in_data}
    if held:  # "before" is the resumed decoder's when the stage was resumed
        summary["heldout_psnr_before"] = before
        summary["heldout_psnr_after"] = {k: reconstruction_psnr(vae, v) for k, v in held.items()}
    return runner.finish(summary, lambda: vae.save_pretrained(runner.stage_dir / "vae"))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description="Fine-tune a trained VAE's decoder (encoder frozen: latents unchanged).")
    p.add_argument("--vae", required=True, help="a trained VAE directory (a checkpoint's vae/, or a run's vae/vae)")
    p.add_argument("--data", required=True, help="a collected dataset directory (the pipeline's OUT/data)")
    p.add_argument("--split", default=None, help="the pipeline's split.json (default: DATA/../split.json when it exists)")
    p.add_argument("--out", required=True, help="stage directory: OUT/vae, OUT/log.jsonl, OUT/DONE")
    p.add_argument("--steps", type=int, default=DecoderFinetuneConfig.steps)
    p.add_argument("--large-fraction", type=float, default=DecoderFinetuneConfig.large_fraction)
    p.add_argument("--large-angle-deg", type=float, default=DecoderFinetuneConfig.large_angle_deg)
    p.add_argument("--chunk-end-weight", type=float, default=DecoderFinetuneConfig.chunk_end_weight,
                   help="loss weight of the last frame of every chunk (the frame an agent reads)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if not 0.0 <= a.large_fraction <= 1.0:
        p.error(f"--large-fraction: expected a share in [0, 1], got {a.large_fraction}")
    if a.chunk_end_weight <= 0:
        p.error(f"--chunk-end-weight: expected a positive weight, got {a.chunk_end_weight}")
    cfg = dataclasses.replace(DecoderFinetuneConfig(), steps=a.steps, large_fraction=a.large_fraction,
                              large_angle_deg=a.large_angle_deg, chunk_end_weight=a.chunk_end_weight)
    data = EpisodeDataset(a.data)
    split = Path(a.split) if a.split else Path(a.data).parent / "split.json"
    if split.is_file():
        s = json.loads(split.read_text())
        train_ids, held_ids = s["train"], s["heldout"]
    else:
        train_ids, held_ids = list(range(len(data))), []
    vae = CausalVAE.from_pretrained(a.vae)
    summary = finetune_decoder(vae, AngleWeightedClips(data, train_ids, cfg), cfg, a.out,
                               AngleWeightedClips(data, held_ids, cfg) if held_ids else None)
    if summary:
        write_json(Path(a.out) / "summary.json", summary)
    print(summary)
    return summary


if __name__ == "__main__":
    main()
