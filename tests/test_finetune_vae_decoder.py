"""Decoder-only VAE fine-tuning: the encoder (every latent) is untouched, the decoder learns, large-angle clips are drawn."""
import numpy as np
import pytest
import torch

from distill.collect import CollectConfig, collect
from distill.dataset import EpisodeDataset
from distill.finetune_vae_decoder import AngleWeightedClips, DecoderFinetuneConfig, finetune_decoder, main
from models.vae import CausalVAE, VAEConfig
from tests.helpers import TINY_VAE


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    collect(CollectConfig(world="cartpole", out=str(out), episodes=4, workers=1, seed=2, max_frames=160, episodes_per_shard=4))
    return out


def test_sampler_draws_the_large_angle_share(data):
    ds = EpisodeDataset(data)
    cfg = DecoderFinetuneConfig(large_angle_deg=10.0, large_fraction=1.0)
    clips = AngleWeightedClips(ds, list(range(len(ds))), cfg)
    assert 0 < len(clips.large) < len(clips.all)
    assert clips.sample(6, np.random.default_rng(0)).shape == (6, 8, 64, 96, 3)
    lean = [np.abs(ds[int(e)].states[s:s + 8, 2]).max() for e, s in clips.large]
    assert min(lean) > np.radians(10.0)
    with pytest.raises(ValueError, match="episodes"):
        AngleWeightedClips(ds, [], cfg)


def test_decoder_learns_and_the_encoder_stays(data, tmp_path):
    torch.manual_seed(0)
    vae = CausalVAE(VAEConfig(frame_height=64, frame_width=96, temporal_down=4, **TINY_VAE))
    enc0 = {k: v.clone() for k, v in vae.encoder.state_dict().items()}
    dec0 = {k: v.clone() for k, v in vae.decoder.state_dict().items()}
    ds = EpisodeDataset(data)
    cfg = DecoderFinetuneConfig(steps=40, batch_size=4, lr=3e-3, warmup_steps=2, save_every=20, log_every=10, heldout_clips=8)
    summary = finetune_decoder(vae, AngleWeightedClips(ds, [0, 1, 2], cfg), cfg, tmp_path / "ft", AngleWeightedClips(ds, [3], cfg))
    out = CausalVAE.from_pretrained(tmp_path / "ft" / "vae")
    for k, v in out.encoder.state_dict().items():
        torch.testing.assert_close(v, enc0[k])
    assert any((v - dec0[k]).abs().max() > 0 for k, v in out.decoder.state_dict().items())
    assert summary["heldout_psnr_after"]["all"]["psnr"] > summary["heldout_psnr_before"]["all"]["psnr"]


def test_cli_rejects_a_bad_share(data, tmp_path):
    with pytest.raises(SystemExit):
        main(["--vae", str(tmp_path), "--data", str(data), "--out", str(tmp_path / "o"), "--large-fraction", "1.5"])


def test_chunk_end_weight_changes_what_the_decoder_learns(data, tmp_path):
    """Weighting the last frame of every chunk is a different objective: the same seeds end with another decoder."""
    ds = EpisodeDataset(data)
    outs = []
    for w in (1.0, 5.0):
        torch.manual_seed(0)
        vae = CausalVAE(VAEConfig(frame_height=64, frame_width=96, temporal_down=4, **TINY_VAE))
        cfg = DecoderFinetuneConfig(steps=3, batch_size=2, lr=3e-3, warmup_steps=1, save_every=3, log_every=1, chunk_end_weight=w)
        finetune_decoder(vae, AngleWeightedClips(ds, [0, 1, 2], cfg), cfg, tmp_path / f"w{w}")
        outs.append(CausalVAE.from_pretrained(tmp_path / f"w{w}" / "vae").decoder.state_dict())
    assert any((outs[0][k] - outs[1][k]).abs().max() > 0 for k in outs[0])
    with pytest.raises(SystemExit):
        main(["--vae", str(tmp_path), "--data", str(data), "--out", str(tmp_path / "o"), "--chunk-end-weight", "0"])
