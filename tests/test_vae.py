"""Causal VAE: streaming == whole clip, causality, save/load, input validation, training stage, metrics."""
import json

import numpy as np
import pytest
import torch

from distill.train_vae import VAETrainConfig, train_vae
from models.io import read_log
from models.metrics import nonwhite_mask, psnr, ssim
from models.vae import CausalVAE, VAEConfig, frames_to_tensor, tensor_to_frames

TD = 2  # temporal_down of the tiny config (kept small so tests run in milliseconds)


def tiny_config(**kw) -> VAEConfig:
    base = dict(latent_channels=4, base_channels=4, channel_mult=(1, 2), num_res_blocks=(1, 1), mid_channels=8,
                num_temporal_blocks=2, temporal_kernel=3, spatial_down=4, temporal_down=TD,
                frame_height=16, frame_width=24, norm_groups=2)
    base.update(kw)
    return VAEConfig(**base)


def random_model(**kw) -> CausalVAE:
    """A tiny VAE whose zero-initialised residual branches are randomised too, so every path
    (temporal convs included) actually carries signal; non-trivial latent statistics."""
    torch.manual_seed(0)
    m = CausalVAE(tiny_config(**kw))
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "conv2" in name:
                p.normal_(0, 0.2)
    C = m.config.latent_channels
    m.set_latent_stats([0.1 * i for i in range(C)], [0.5 + 0.25 * i for i in range(C)])
    return m.eval()


def moving_rect_clips(batch_size: int, num_frames: int, rng: np.random.Generator, H=16, W=24) -> np.ndarray:
    """White background, one dark rectangle moving at a constant random velocity: (B, T, H, W, 3) uint8."""
    clips = np.full((batch_size, num_frames, H, W, 3), 255, np.uint8)
    for b in range(batch_size):
        h, w = rng.integers(3, 7), rng.integers(3, 8)
        y, x = rng.uniform(0, H - h), rng.uniform(0, W - w)
        vy, vx = rng.uniform(-1, 1), rng.uniform(-1.5, 1.5)
        color = rng.integers(0, 160, size=3)
        for t in range(num_frames):
            yy = int(np.clip(y + vy * t, 0, H - h))
            xx = int(np.clip(x + vx * t, 0, W - w))
            clips[b, t, yy:yy + h, xx:xx + w] = color
    return clips


# ----- streaming == whole clip ---------------------------------------------------------------------
@pytest.mark.parametrize("chunks", [[1] * 6, [2, 2, 2], [3, 3], [1, 2, 3], [6]])
def test_streaming_decode_matches_full(chunks):
    m = random_model()
    z = torch.randn(2, 4, 6, 4, 6)  # (B, C, T', h, w)
    with torch.no_grad():
        full = m.decode(z)
        st = m.init_stream_state(2)
        outs, t = [], 0
        for k in chunks:
            x, st = m.decode_step(z[:, :, t:t + k], st)
            outs.append(x)
            t += k
    assert full.shape == (2, 3, 6 * TD, 16, 24)
    torch.testing.assert_close(torch.cat(outs, dim=2), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("frames", [(TD - 1,), (0,), (1, 0)])
def test_streaming_decode_of_some_frames_matches_full(frames):
    """Decoding only some frames of each latent frame (the env's last-frame observation) gives
    exactly those frames of the full decode, and leaves the stream where a full decode would."""
    m = random_model()
    z = torch.randn(2, 4, 4, 4, 6)
    with torch.no_grad():
        full = m.decode(z)
        st = m.init_stream_state(2)
        outs = []
        for t in range(4):
            x, st = m.decode_step(z[:, :, t:t + 1], st, frames=frames)
            assert x.shape[2] == len(frames)
            outs.append(x)
    want = full[:, :, [TD * t + f for t in range(4) for f in frames]]
    torch.testing.assert_close(torch.cat(outs, dim=2), want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="frames"):
        m.decode_step(z[:, :, :1], m.init_stream_state(2), frames=(TD,))


@pytest.mark.parametrize("chunks", [[1] * 6, [2, 2, 2], [1, 2, 3]])
def test_streaming_encode_matches_full(chunks):
    m = random_model()
    x = torch.rand(2, 3, 6 * TD, 16, 24) * 2 - 1
    with torch.no_grad():
        full = m.encode(x)
        st = m.init_stream_state(2)
        outs, t = [], 0
        for k in chunks:
            z, st = m.encode_step(x[:, :, t * TD:(t + k) * TD], st)
            outs.append(z)
            t += k
    assert full.shape == (2, 4, 6, 4, 6)
    torch.testing.assert_close(torch.cat(outs, dim=2), full, atol=1e-5, rtol=1e-5)


def test_reset_stream_state_row_matches_fresh_stream():
    m = random_model()
    z = torch.randn(3, 4, 4, 4, 6)
    x = torch.rand(3, 3, 4 * TD, 16, 24) * 2 - 1
    with torch.no_grad():
        st = m.init_stream_state(3)
        for k in range(2):  # two latent frames of history in every row
            _, st = m.decode_step(z[:, :, k:k + 1], st)
            _, st = m.encode_step(x[:, :, k * TD:(k + 1) * TD], st)
        st = m.reset_stream_state(st, torch.tensor([False, True, False]))
        dec, enc = [], []
        for k in range(2, 4):
            xd, st = m.decode_step(z[:, :, k:k + 1], st)
            ze, st = m.encode_step(x[:, :, k * TD:(k + 1) * TD], st)
            dec.append(xd)
            enc.append(ze)
        dec, enc = torch.cat(dec, 2), torch.cat(enc, 2)
        # untouched rows continue the long stream, the reset row restarts from scratch
        full_dec, full_enc = m.decode(z)[:, :, 2 * TD:], m.encode(x)[:, :, 2:]
        fresh_dec, fresh_enc = m.decode(z[1:2, :, 2:]), m.encode(x[1:2, :, 2 * TD:])
    torch.testing.assert_close(dec[[0, 2]], full_dec[[0, 2]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(enc[[0, 2]], full_enc[[0, 2]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dec[1:2], fresh_dec, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(enc[1:2], fresh_enc, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(dec[1:2], full_dec[1:2], atol=1e-4)  # the reset did change something


# ----- causality -----------------------------------------------------------------------------------
def test_encoder_is_causal_and_uses_the_past():
    m = random_model()
    x = torch.rand(1, 3, 4 * TD, 16, 24) * 2 - 1
    with torch.no_grad():
        z = m.encode(x)
        x2 = x.clone()
        x2[:, :, 2 * TD] += 0.5  # first frame of latent group 2
        z2 = m.encode(x2)
    torch.testing.assert_close(z2[:, :, :2], z[:, :, :2], atol=0, rtol=0)  # earlier latents untouched
    assert (z2[:, :, 2] - z[:, :, 2]).abs().max() > 1e-4
    assert (z2[:, :, 3] - z[:, :, 3]).abs().max() > 1e-4  # temporal convs carry the past forward


def test_decoder_is_causal_and_uses_the_past():
    m = random_model()
    z = torch.randn(1, 4, 4, 4, 6)
    with torch.no_grad():
        x = m.decode(z)
        z2 = z.clone()
        z2[:, :, 2] += 1.0
        x2 = m.decode(z2)
    torch.testing.assert_close(x2[:, :, :2 * TD], x[:, :, :2 * TD], atol=0, rtol=0)
    assert (x2[:, :, 2 * TD:3 * TD] - x[:, :, 2 * TD:3 * TD]).abs().max() > 1e-4
    assert (x2[:, :, 3 * TD:] - x[:, :, 3 * TD:]).abs().max() > 1e-4


# ----- save / load ---------------------------------------------------------------------------------
def test_save_load_round_trip_exact(tmp_path):
    m = random_model()
    m.save_pretrained(tmp_path / "vae")
    m2 = CausalVAE.from_pretrained(tmp_path / "vae").eval()
    assert m2.config == m.config
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    x = torch.rand(1, 3, 2 * TD, 16, 24) * 2 - 1
    with torch.no_grad():
        assert torch.equal(m.encode(x), m2.encode(x))
        assert torch.equal(m.decode(m.encode(x)), m2.decode(m2.encode(x)))


def test_corrupted_weights_raise_value_error(tmp_path):
    m = random_model()
    d = m.save_pretrained(tmp_path / "vae")
    (d / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="safetensors"):
        CausalVAE.from_pretrained(d)


# ----- input validation ----------------------------------------------------------------------------
def test_bad_shapes_raise_value_error_naming_the_argument():
    m = random_model()
    st = m.init_stream_state(1)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3, T, 16, 24\)"):
        m.encode(torch.zeros(3, 2, 16, 24))  # rank 4
    with pytest.raises(ValueError, match="x must have shape"):
        m.encode(torch.zeros(1, 1, TD, 16, 24))  # channels
    with pytest.raises(ValueError, match=f"multiple of {TD}"):
        m.encode(torch.zeros(1, 3, TD + 1, 16, 24))  # T
    with pytest.raises(ValueError, match="x must have shape"):
        m.encode(torch.zeros(1, 3, TD, 16, 20))  # W
    with pytest.raises(ValueError, match=r"z must have shape \(B, 4, T, 4, 6\)"):
        m.decode(torch.zeros(1, 4, 1, 5, 6))
    with pytest.raises(ValueError, match="x_chunk must have shape"):
        m.encode_step(torch.zeros(1, 3, 1, 16, 24), st)
    with pytest.raises(ValueError, match="z_chunk must have shape"):
        m.decode_step(torch.zeros(1, 3, 1, 4, 6), st)
    with pytest.raises(ValueError, match="batch size"):
        m.decode_step(torch.zeros(2, 4, 1, 4, 6), st)
    with pytest.raises(ValueError, match="env_mask"):
        m.reset_stream_state(st, torch.tensor([True, False]))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        m.encode(np.zeros((1, 3, TD, 16, 24), np.float32))
    with pytest.raises(TypeError, match="uint8"):
        frames_to_tensor(np.zeros((1, TD, 16, 24, 3), np.float32))
    with pytest.raises(ValueError, match="spatial_down"):
        VAEConfig(spatial_down=6)
    with pytest.raises(ValueError, match="channel_mult"):
        VAEConfig(channel_mult=(1, 2))


def test_frames_tensor_round_trip():
    frames = np.random.default_rng(0).integers(0, 256, (2, 4, 16, 24, 3), dtype=np.uint8)
    x = frames_to_tensor(frames)
    assert x.shape == (2, 3, 4, 16, 24) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(tensor_to_frames(x), frames)


# ----- training stage ------------------------------------------------------------------------------
def small_train_cfg(**kw) -> VAETrainConfig:
    base = dict(steps=30, batch_size=4, clip_frames=2 * TD, lr=3e-3, warmup_steps=2, save_every=10, log_every=1,
                stats_clips=8, heldout_clips=4, eval_batch_size=4,
                vae=tiny_config(num_temporal_blocks=1, temporal_kernel=2))
    base.update(kw)
    return VAETrainConfig(**base)


def test_train_vae_loss_falls_and_resumes(tmp_path):
    cfg = small_train_cfg()
    calls = {"n": 0}

    def dying_sampler(b, t, rng):  # simulates a kill during step 16 (last checkpoint: step 10)
        calls["n"] += 1
        if calls["n"] == 16:
            raise KeyboardInterrupt("simulated kill")
        return moving_rect_clips(b, t, rng)

    with pytest.raises(KeyboardInterrupt):
        train_vae(dying_sampler, cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "DONE").exists()
    heldout = moving_rect_clips(4, 2 * TD, np.random.default_rng(123))
    summary = train_vae(moving_rect_clips, cfg, tmp_path / "run", heldout_clips=heldout)
    assert summary["resumed_from"] == 10 and summary["steps"] == 30
    losses = [r["vae/loss"] for r in read_log(tmp_path / "run" / "log.jsonl") if "vae/loss" in r]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert np.isfinite(summary["heldout_psnr"]) and summary["heldout_psnr"] > 5
    assert len(summary["latent_std"]) == 4
    assert json.loads((tmp_path / "run" / "DONE").read_text())["steps"] == 30

    # the exported model carries the latent statistics: encode gives ~zero-mean, unit-std latents
    vae = CausalVAE.from_pretrained(tmp_path / "run" / "vae")
    assert vae.config.latent_std == summary["latent_std"]
    with torch.no_grad():
        z = vae.encode(frames_to_tensor(moving_rect_clips(8, 2 * TD, np.random.default_rng(cfg.seed + 1))))
    assert z.mean(dim=(0, 2, 3, 4)).abs().max() < 0.2
    assert (z.std(dim=(0, 2, 3, 4)) - 1).abs().max() < 0.2

    # the interrupted-and-resumed run ends with exactly the weights of an uninterrupted one
    train_vae(moving_rect_clips, cfg, tmp_path / "straight", heldout_clips=heldout)
    a = CausalVAE.from_pretrained(tmp_path / "run" / "vae").state_dict()
    b = CausalVAE.from_pretrained(tmp_path / "straight" / "vae").state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)

    # a finished stage returns its summary without training again
    again = train_vae(moving_rect_clips, cfg, tmp_path / "run")
    assert again["steps"] == 30 and again["resumed_from"] == 10


def test_train_vae_rejects_bad_clips(tmp_path):
    cfg = small_train_cfg(steps=2)
    with pytest.raises(ValueError, match="sample_clips"):
        train_vae(lambda b, t, rng: np.zeros((b, t, 8, 8, 3), np.uint8), cfg, tmp_path / "bad")
    with pytest.raises(ValueError, match="clip_frames"):
        small_train_cfg(clip_frames=3)


# ----- metrics -------------------------------------------------------------------------------------
def test_psnr_and_ssim_sanity():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 3, 16, 24, 3), dtype=np.uint8)
    assert psnr(a, a) == float("inf")
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-9)
    b = a.copy().astype(np.int16)
    b = np.clip(b + 1 - 2 * (b == 255), 0, 255).astype(np.uint8)  # every pixel off by exactly 1
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2), abs=1e-9)
    noisy = np.clip(a + rng.normal(0, 40, a.shape), 0, 255).astype(np.uint8)
    assert ssim(a, noisy) < 0.9
    # masked PSNR only counts the masked pixels
    white = np.full((1, 16, 24, 3), 255, np.uint8)
    white[0, 4:8, 4:8] = 0
    rec = white.copy()
    rec[0, 0, 0] = 200  # error on a white pixel only
    mask = nonwhite_mask(white)
    assert mask.sum() == 16
    assert psnr(white, rec, mask=mask) == float("inf")
    assert np.isfinite(psnr(white, rec))
