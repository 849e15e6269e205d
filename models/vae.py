"""Causal 3D video autoencoder: 64x96 RGB frames <-> 8x12x8 latents, 4 frames per latent frame.

Layout. Public tensors are (B, C, T, H, W) with time on axis 2 (frames in [-1, 1]; latents
normalised with `latent_mean` / `latent_std`). Inside, everything is kept as (B, T, C, H, W) so
that "every frame is an image" is a free view (B*T, C, H, W) for the 2D convs, and so that
grouping `temporal_down` consecutive frames into channels is a free view too.

Causality. Space is handled by per-frame 2D convs (GroupNorm per frame, never across time).
Time is touched in exactly two ways:
  * temporal down/up-sampling by folding the `temporal_down` frames of a group into channels
    (encoder) and unfolding them again (decoder), so latent frame k sees frames 4k..4k+3 only;
  * causal temporal convs at the latent frame rate: latent frame k sees latent frames
    k-kt+1..k, the missing ones at the start being zeros (left padding).
Hence latent k depends only on frames < 4(k+1), and decoded frames 4k..4k+3 only on latents <= k.

Streaming. Every causal conv keeps its last kt-1 input frames as a feature cache
(`VAEStreamState`), starting as the zeros that stand for the left padding. Whole-clip
`encode`/`decode` run the same code with a fresh zero cache, so streaming latent frame by latent
frame gives the same numbers as the whole clip.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.io import PretrainedMixin


@dataclass
class VAEConfig:
    in_channels: int = 3
    latent_channels: int = 8
    base_channels: int = 32
    # Width multiplier per spatial level, finest first; one entry per stride-2 stage, so
    # len == log2(spatial_down). Kept low at fine levels: per-frame convs at 32x48 dominate the cost.
    channel_mult: tuple[int, ...] = (1, 1, 2)
    # Width at the latent resolution, where the temporal convs run once per *latent* frame
    # (4x cheaper than per-frame work), so this is where most parameters live.
    mid_channels: int = 96
    # Per-frame residual blocks per spatial level (finest first), in encoder and decoder. None at
    # the finest level (32x48): one 32-channel block there would cost ~1/3 of the decode time.
    num_res_blocks: tuple[int, ...] = (0, 1, 1)
    num_temporal_blocks: int = 2  # causal temporal residual blocks at the latent resolution
    temporal_kernel: int = 2  # in latent frames: each latent frame also sees the previous one
    spatial_down: int = 8  # power of two
    temporal_down: int = 4  # frames per latent frame
    frame_height: int = 64
    frame_width: int = 96
    norm_groups: int = 8  # GroupNorm groups (per frame); gcd with the channel count is used
    # Per-channel latent statistics, written after training so that `encode` returns ~unit-variance
    # latents; None -> zeros / ones (identity).
    latent_mean: list[float] | None = None
    latent_std: list[float] | None = None

    def __post_init__(self):
        for name in ("in_channels", "latent_channels", "base_channels", "mid_channels", "temporal_down",
                     "temporal_kernel", "frame_height", "frame_width", "norm_groups"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"VAEConfig.{name} must be a positive int, got {v!r}")
        v = self.num_temporal_blocks
        if not isinstance(v, int) or v < 0:
            raise ValueError(f"VAEConfig.num_temporal_blocks must be a non-negative int, got {v!r}")
        sd = self.spatial_down
        if not isinstance(sd, int) or sd < 2 or sd & (sd - 1):
            raise ValueError(f"VAEConfig.spatial_down must be a power of two >= 2, got {sd!r}")
        for name in ("channel_mult", "num_res_blocks"):
            v = tuple(getattr(self, name))
            if len(v) != self.num_levels or not all(isinstance(a, int) and a >= 0 for a in v):
                raise ValueError(
                    f"VAEConfig.{name} needs one non-negative int per stride-2 stage (log2(spatial_down)="
                    f"{self.num_levels}), got {v}"
                )
            setattr(self, name, v)
        if 0 in self.channel_mult:
            raise ValueError(f"VAEConfig.channel_mult entries must be positive, got {self.channel_mult}")
        if self.frame_height % sd or self.frame_width % sd:
            raise ValueError(
                f"VAEConfig.frame_height/frame_width ({self.frame_height}x{self.frame_width}) must be "
                f"multiples of spatial_down={sd}"
            )
        for name, default in (("latent_mean", 0.0), ("latent_std", 1.0)):
            v = getattr(self, name)
            v = [default] * self.latent_channels if v is None else [float(a) for a in v]
            if len(v) != self.latent_channels:
                raise ValueError(f"VAEConfig.{name} must have latent_channels={self.latent_channels} entries, got {len(v)}")
            setattr(self, name, v)
        if any(s <= 0 for s in self.latent_std):
            raise ValueError(f"VAEConfig.latent_std must be positive, got {self.latent_std}")

    @property
    def num_levels(self) -> int:
        return int(math.log2(self.spatial_down))

    @property
    def latent_height(self) -> int:
        return self.frame_height // self.spatial_down

    @property
    def latent_width(self) -> int:
        return self.frame_width // self.spatial_down


def _norm(c: int, groups: int) -> nn.GroupNorm:
    # Applied to (frames, C, H, W): statistics are per frame, never across time.
    return nn.GroupNorm(math.gcd(groups, c), c)


class ResBlock2d(nn.Module):
    """Per-frame residual block on (N, C, H, W), N = every frame of every clip."""

    def __init__(self, c: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(c, groups), nn.Conv2d(c, c, 3, padding=1)
        self.norm2, self.conv2 = _norm(c, groups), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class CausalConv(nn.Module):
    """(kt x 3 x 3) conv, causal in time, on (B, T, C, H, W).

    Output frame t sees input frames t-kt+1..t; the kt-1 frames before the chunk come from `cache`
    (zeros at the start of a stream = causal left padding). Implemented as a 2D conv over the kt
    frames stacked in channels, which is exactly a causal Conv3d and fast on CPU.
    """

    def __init__(self, cin: int, cout: int, kt: int):
        super().__init__()
        self.kt = kt
        self.conv = nn.Conv2d(kt * cin, cout, 3, padding=1)

    def forward(self, x, cache):
        B, T = x.shape[:2]
        xp = torch.cat([cache, x], dim=1)  # (B, kt-1+T, C, H, W), time axis 1
        win = torch.cat([xp[:, i:i + T] for i in range(self.kt)], dim=2)  # (B, T, kt*C, H, W), oldest first
        out = self.conv(win.flatten(0, 1)).unflatten(0, (B, T))  # (B, T, Cout, H, W)
        return out, xp[:, T:].clone()  # new cache: the last kt-1 input frames


class TemporalResBlock(nn.Module):
    """Residual block at the latent resolution: causal (kt x 3 x 3) conv, then a per-frame 3x3 conv."""

    def __init__(self, c: int, kt: int, groups: int):
        super().__init__()
        self.norm1, self.tconv = _norm(c, groups), CausalConv(c, c, kt)
        self.norm2, self.conv2 = _norm(c, groups), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x, cache):  # x (B, T, C, H, W)
        B, T = x.shape[:2]
        h = F.silu(self.norm1(x.flatten(0, 1))).unflatten(0, (B, T))  # per-frame norm
        h, cache = self.tconv(h, cache)
        h = self.conv2(F.silu(self.norm2(h.flatten(0, 1))))  # (B*T, C, H, W)
        return x + h.unflatten(0, (B, T)), cache


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        ch = [cfg.base_channels * m for m in cfg.channel_mult]
        g = cfg.norm_groups
        # Stage 1 of log2(spatial_down) is a free pixel-unshuffle: no conv ever runs at full resolution.
        self.conv_in = nn.Conv2d(4 * cfg.in_channels, ch[0], 3, padding=1)
        levels = []
        for i, c in enumerate(ch):
            blocks = [ResBlock2d(c, g) for _ in range(cfg.num_res_blocks[i])]
            if i + 1 < len(ch):
                blocks.append(nn.Conv2d(c, ch[i + 1], 3, stride=2, padding=1))  # stride-2 stage
            levels.append(nn.Sequential(*blocks))
        self.levels = nn.Sequential(*levels)
        self.fold = nn.Conv2d(cfg.temporal_down * ch[-1], cfg.mid_channels, 1)
        self.blocks = nn.ModuleList(
            TemporalResBlock(cfg.mid_channels, cfg.temporal_kernel, g) for _ in range(cfg.num_temporal_blocks))
        self.norm_out = _norm(cfg.mid_channels, g)
        self.conv_out = nn.Conv2d(cfg.mid_channels, cfg.latent_channels, 3, padding=1)

    def forward(self, x, caches):
        """x (B, T, C, H, W) in [-1, 1] -> raw latents (B, T // td, latent_channels, h, w), new caches."""
        B, T = x.shape[:2]
        td = self.cfg.temporal_down
        h = F.pixel_unshuffle(x.flatten(0, 1), 2)  # (B*T, 4C, H/2, W/2), one image per frame
        h = self.levels(self.conv_in(h))  # (B*T, ch[-1], h, w)
        C, hh, ww = h.shape[1:]
        h = h.reshape(B, T // td, td * C, hh, ww)  # fold each group of td frames into channels; axis 1 = latent time
        h = self.fold(h.flatten(0, 1)).unflatten(0, (B, T // td))  # (B, T', mid, h, w)
        new_caches = []
        for blk, cache in zip(self.blocks, caches):
            h, cache = blk(h, cache)
            new_caches.append(cache)
        z = self.conv_out(F.silu(self.norm_out(h.flatten(0, 1))))  # (B*T', latent, h, w)
        return z.unflatten(0, (B, T // td)), new_caches


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        ch = [cfg.base_channels * m for m in cfg.channel_mult]
        g = cfg.norm_groups
        self.conv_in = nn.Conv2d(cfg.latent_channels, cfg.mid_channels, 3, padding=1)
        self.blocks = nn.ModuleList(
            TemporalResBlock(cfg.mid_channels, cfg.temporal_kernel, g) for _ in range(cfg.num_temporal_blocks))
        self.norm_unfold = _norm(cfg.mid_channels, g)
        self.unfold = nn.Conv2d(cfg.mid_channels, cfg.temporal_down * ch[-1], 1)
        levels = []
        for i in reversed(range(len(ch))):
            blocks = [ResBlock2d(ch[i], g) for _ in range(cfg.num_res_blocks[i])]
            if i > 0:  # x2 upsampling stage: conv to 4x channels, then pixel-shuffle
                blocks += [nn.Conv2d(ch[i], 4 * ch[i - 1], 3, padding=1), nn.PixelShuffle(2)]
            levels.append(nn.Sequential(*blocks))
        self.levels = nn.Sequential(*levels)
        self.norm_out = _norm(ch[0], g)
        # Last stage mirrors the encoder's pixel-unshuffle: predict 2x2 pixels per position.
        self.conv_out = nn.Conv2d(ch[0], 4 * cfg.in_channels, 3, padding=1)

    def forward(self, z, caches, frames: tuple[int, ...] | None = None):
        """raw latents (B, T', latent, h, w) -> frames (B, T' * td, C, H, W), new caches.
        `frames`: which of each latent frame's td frames to produce (e.g. (td - 1,): the last);
        the latent-rate part and its caches run in full, the per-frame part only for those."""
        B, Tl = z.shape[:2]
        td = self.cfg.temporal_down
        h = self.conv_in(z.flatten(0, 1)).unflatten(0, (B, Tl))  # (B, T', mid, h, w)
        new_caches = []
        for blk, cache in zip(self.blocks, caches):
            h, cache = blk(h, cache)
            new_caches.append(cache)
        h = self.unfold(F.silu(self.norm_unfold(h.flatten(0, 1))))  # (B*T', td*C, h, w)
        C = h.shape[1] // td
        h = h.reshape(B * Tl, td, C, *h.shape[2:])  # unfold channels into td frames: (B*T', td, C, h, w)
        if frames is not None:
            h = h[:, list(frames)]  # frames are independent from here on: decode only the asked ones
        n = h.shape[1]
        h = self.levels(h.flatten(0, 1))  # (B*T'*n, ch[0], H/2, W/2)
        x = F.pixel_shuffle(self.conv_out(F.silu(self.norm_out(h))), 2)  # (B*T'*n, C_in, H, W)
        return x.unflatten(0, (B, Tl * n)), new_caches


@dataclass
class VAEStreamState:
    """Feature caches of a streaming encoder/decoder; every tensor has the batch on dim 0.

    enc[i] / dec[i]: the last temporal_kernel-1 (latent-rate) input frames of the i-th causal conv,
    shape (B, kt-1, mid_channels, h, w); zeros = the causal left padding of a fresh stream.
    """

    enc: list[torch.Tensor] = field(default_factory=list)
    dec: list[torch.Tensor] = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        t = (self.enc or self.dec or [None])[0]
        return -1 if t is None else t.shape[0]


class CausalVAE(nn.Module, PretrainedMixin):
    config_class = VAEConfig

    def __init__(self, config: VAEConfig):
        super().__init__()
        if not isinstance(config, VAEConfig):
            raise TypeError(f"config must be a VAEConfig, got {type(config).__name__}")
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        # Non-persistent: the config is the single source of truth for the latent statistics.
        self.register_buffer("latent_mean", torch.zeros(config.latent_channels), persistent=False)
        self.register_buffer("latent_std", torch.ones(config.latent_channels), persistent=False)
        self.set_latent_stats(config.latent_mean, config.latent_std)
        self.initialize_weights()

    def initialize_weights(self):
        # Zero the last conv of every residual branch so each block starts as the identity:
        # the network begins as a shallow, well-conditioned autoencoder and deepens as it trains.
        for m in self.modules():
            if isinstance(m, ResBlock2d | TemporalResBlock):
                nn.init.zeros_(m.conv2.weight)
                nn.init.zeros_(m.conv2.bias)

    def set_latent_stats(self, mean, std) -> None:
        """Set per-channel latent mean/std (config and buffers) so `encode` returns normalised latents."""
        mean = [float(v) for v in mean]
        std = [float(v) for v in std]
        C = self.config.latent_channels
        if len(mean) != C or len(std) != C:
            raise ValueError(f"mean and std must each have latent_channels={C} entries, got {len(mean)} and {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {std}")
        self.config.latent_mean, self.config.latent_std = mean, std
        self.latent_mean.copy_(torch.tensor(mean))
        self.latent_std.copy_(torch.tensor(std))

    # ----- shapes -------------------------------------------------------------------------------
    def _check(self, t, name: str, channels: int, height: int, width: int, time_multiple: int):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        expected = f"(B, {channels}, T, {height}, {width})" + (f" with T a multiple of {time_multiple}" if time_multiple > 1 else "")
        if t.ndim != 5:
            raise ValueError(f"{name} must have shape {expected}, got {tuple(t.shape)} (rank {t.ndim})")
        B, C, T, H, W = t.shape
        if C != channels or H != height or W != width or T == 0 or T % time_multiple:
            raise ValueError(f"{name} must have shape {expected}, got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a float tensor, got {t.dtype}; use frames_to_tensor for uint8 frames")

    def _check_frames(self, x, name):
        c = self.config
        self._check(x, name, c.in_channels, c.frame_height, c.frame_width, c.temporal_down)

    def _check_latents(self, z, name):
        c = self.config
        self._check(z, name, c.latent_channels, c.latent_height, c.latent_width, 1)

    def _check_state(self, state, batch: int, name: str = "state"):
        if not isinstance(state, VAEStreamState):
            raise TypeError(f"{name} must be a VAEStreamState from init_stream_state, got {type(state).__name__}")
        if len(state.enc) != len(self.encoder.blocks) or len(state.dec) != len(self.decoder.blocks):
            raise ValueError(f"{name} does not belong to this model's config; make it with init_stream_state")
        if state.enc and state.batch_size != batch:
            raise ValueError(f"{name} holds batch size {state.batch_size} but the chunk has batch size {batch}")

    # ----- normalisation ------------------------------------------------------------------------
    def _normalise(self, z_raw):  # (B, C, T', h, w), channels on axis 1
        return (z_raw - self.latent_mean.view(1, -1, 1, 1, 1)) / self.latent_std.view(1, -1, 1, 1, 1)

    def _denormalise(self, z):  # (B, C, T', h, w), channels on axis 1
        return z * self.latent_std.view(1, -1, 1, 1, 1) + self.latent_mean.view(1, -1, 1, 1, 1)

    # ----- whole clips --------------------------------------------------------------------------
    def encode_raw(self, x: torch.Tensor) -> torch.Tensor:
        """Frames (B, C, T, H, W) -> un-normalised latents (B, C_lat, T // td, h, w)."""
        self._check_frames(x, "x")
        z, _ = self.encoder(x.transpose(1, 2), self._zero_caches(x.shape[0], x, self.encoder))
        return z.transpose(1, 2)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Frames (B, 3, T, H, W) in [-1, 1] -> normalised latents (B, C_lat, T // td, H / sd, W / sd)."""
        return self._normalise(self.encode_raw(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, C_lat, T', h, w) -> frames (B, 3, T' * td, H, W), roughly in [-1, 1]."""
        self._check_latents(z, "z")
        x, _ = self.decoder(self._denormalise(z).transpose(1, 2), self._zero_caches(z.shape[0], z, self.decoder))
        return x.transpose(1, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruct: returns (reconstruction (B, 3, T, H, W), raw latents (B, C_lat, T', h, w))."""
        self._check_frames(x, "x")
        B = x.shape[0]
        z_raw, _ = self.encoder(x.transpose(1, 2), self._zero_caches(B, x, self.encoder))
        # Normalise-then-denormalise is the identity, so training sees the raw latents directly.
        x_hat, _ = self.decoder(z_raw, self._zero_caches(B, x, self.decoder))
        return x_hat.transpose(1, 2), z_raw.transpose(1, 2)

    # ----- streaming ----------------------------------------------------------------------------
    def _zero_caches(self, batch_size: int, like: torch.Tensor, part: nn.Module) -> list[torch.Tensor]:
        c = self.config
        shape = (batch_size, c.temporal_kernel - 1, c.mid_channels, c.latent_height, c.latent_width)
        return [like.new_zeros(shape) for _ in part.blocks]

    def init_stream_state(self, batch_size: int, device: torch.device | str | None = None) -> VAEStreamState:
        """A fresh stream (zero caches = causal left padding) for `batch_size` parallel clips."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        p = next(self.parameters())
        like = torch.empty(0, dtype=p.dtype, device=p.device if device is None else device)
        return VAEStreamState(enc=self._zero_caches(batch_size, like, self.encoder),
                              dec=self._zero_caches(batch_size, like, self.decoder))

    def reset_stream_state(self, state: VAEStreamState, env_mask: torch.Tensor) -> VAEStreamState:
        """Zero the caches of the rows where `env_mask` (bool, shape (B,)) is True; returns the state."""
        self._check_state(state, state.batch_size)
        env_mask = torch.as_tensor(env_mask)
        B = state.batch_size if state.batch_size > 0 else env_mask.numel()  # no caches: nothing to check against
        if env_mask.dtype != torch.bool or env_mask.shape != (B,):
            raise ValueError(f"env_mask must be a bool tensor of shape ({B},), got "
                             f"{env_mask.dtype} {tuple(env_mask.shape)}")
        for caches in (state.enc, state.dec):
            for i, c in enumerate(caches):
                m = env_mask.to(c.device).view(-1, *([1] * (c.ndim - 1)))
                caches[i] = c.masked_fill(m, 0.0)
        return state

    def encode_step(self, x_chunk: torch.Tensor, state: VAEStreamState) -> tuple[torch.Tensor, VAEStreamState]:
        """Frames (B, 3, k * td, H, W) -> (normalised latents (B, C_lat, k, h, w), new state)."""
        self._check_frames(x_chunk, "x_chunk")
        self._check_state(state, x_chunk.shape[0])
        z, enc = self.encoder(x_chunk.transpose(1, 2), state.enc)
        return self._normalise(z.transpose(1, 2)), VAEStreamState(enc=enc, dec=state.dec)

    def decode_step(self, z_chunk: torch.Tensor, state: VAEStreamState,
                    frames: tuple[int, ...] | None = None) -> tuple[torch.Tensor, VAEStreamState]:
        """Normalised latents (B, C_lat, k, h, w) -> (frames (B, 3, k * td, H, W), new state).
        `frames`: only these of each latent frame's td frames (e.g. `(td - 1,)`, the last), giving
        (B, 3, k * len(frames), H, W); the state advances exactly as for a full decode."""
        self._check_latents(z_chunk, "z_chunk")
        self._check_state(state, z_chunk.shape[0])
        td = self.config.temporal_down
        if frames is not None:
            frames = tuple(int(f) for f in frames)
            if not frames or any(not 0 <= f < td for f in frames) or len(set(frames)) != len(frames):
                raise ValueError(f"frames: expected distinct indices in [0, {td}) within each latent frame, got {frames}")
        x, dec = self.decoder(self._denormalise(z_chunk).transpose(1, 2), state.dec, frames)
        return x.transpose(1, 2), VAEStreamState(enc=state.enc, dec=dec)


# ----- uint8 frames <-> model tensors -----------------------------------------------------------
def frames_to_tensor(frames, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 frames (B, T, H, W, 3) (numpy or torch) -> float32 (B, 3, T, H, W) in [-1, 1]."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames)
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"frames must be a numpy array or torch tensor, got {type(frames).__name__}")
    if frames.dtype != torch.uint8:
        raise TypeError(f"frames must be uint8 (0..255), got {frames.dtype}")
    if frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (B, T, H, W, 3), got {tuple(frames.shape)}")
    x = frames.to(device) if device is not None else frames
    return x.permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)  # (B, 3, T, H, W), time on axis 2


def tensor_to_frames(x: torch.Tensor) -> np.ndarray:
    """float (B, 3, T, H, W) in [-1, 1] -> uint8 numpy (B, T, H, W, 3) (values clamped)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 5 or x.shape[1] != 3:
        raise ValueError(f"x must have shape (B, 3, T, H, W), got {tuple(x.shape)}")
    u8 = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return u8.permute(0, 2, 3, 4, 1).cpu().numpy()  # (B, T, H, W, 3)
