"""Frame-fidelity metrics on uint8 RGB frames (..., H, W, 3): PSNR (optionally masked) and SSIM.

Shared by the VAE stage, the world-model evaluation and the fidelity tables, so every number in
the project is computed the same way (data range 255, channels pooled).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _as_uint8_array(a, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or torch tensor of uint8 frames, got {type(a).__name__}")
    if a.dtype != np.uint8:
        raise TypeError(f"{name} must have dtype uint8 (frames in 0..255), got {a.dtype}")
    if a.ndim < 3 or a.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (..., H, W, 3), got {tuple(a.shape)}")
    return a


def nonwhite_mask(frames) -> np.ndarray:
    """(..., H, W, 3) uint8 -> bool (..., H, W): pixels with any channel below 250.

    Why 250 and not 255: downsampling anti-aliases edges, so near-white halos belong to the
    background; the objects (cart, pole) are far darker.
    """
    frames = _as_uint8_array(frames, "frames")
    return (frames < 250).any(axis=-1)


def psnr(a, b, mask=None) -> float:
    """PSNR in dB between uint8 frames a, b of the same shape (..., H, W, 3).

    mask: optional bool (..., H, W) (or the full shape) selecting the pixels that count.
    Returns inf for identical inputs (or identical masked pixels), nan for an empty mask.
    """
    a = _as_uint8_array(a, "a")
    b = _as_uint8_array(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    se = (a.astype(np.float64) - b.astype(np.float64)) ** 2  # (..., H, W, 3)
    if mask is None:
        mse = float(se.mean())
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape == a.shape[:-1]:
            mask = np.broadcast_to(mask[..., None], a.shape)
        elif mask.shape != a.shape:
            raise ValueError(f"mask must have shape {a.shape[:-1]} or {a.shape}, got {mask.shape}")
        n = int(mask.sum())
        if n == 0:
            return float("nan")
        mse = float(se[mask].sum() / n)
    return psnr_from_mse(mse)


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of a mean squared error over uint8 pixels: inf for 0, nan for a non-finite MSE."""
    if mse == 0.0:
        return float("inf")
    return 10.0 * math.log10(255.0**2 / mse) if math.isfinite(mse) else float("nan")


def _gaussian_1d(size: int, sigma: float, dtype: torch.dtype) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype)  # (size,); the 2D window is its outer product (separable)


def _ssim_map(x: torch.Tensor, y: torch.Tensor, window_size: int, sigma: float) -> torch.Tensor:
    """(N, 3, H, W) float -> the SSIM map (N, 3, H-w+1, W-w+1): Gaussian-weighted local means,
    variances and covariance ('valid' windows), one separable filter per channel."""
    g = _gaussian_1d(window_size, sigma, x.dtype)
    gh, gw = g.view(1, 1, -1, 1).expand(3, 1, window_size, 1), g.view(1, 1, 1, -1).expand(3, 1, 1, window_size)

    def filt(t):  # (N, 3, H, W) -> (N, 3, H-w+1, W-w+1)
        return F.conv2d(F.conv2d(t, gh, groups=3), gw, groups=3)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = filt(x), filt(y)
    sxx = filt(x * x) - mu_x**2
    syy = filt(y * y) - mu_y**2
    sxy = filt(x * y) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))


def _frames_pair(a, b, window_size: int) -> tuple[np.ndarray, np.ndarray]:
    a = _as_uint8_array(a, "a")
    b = _as_uint8_array(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    H, W = a.shape[-3:-1]
    if H < window_size or W < window_size:
        raise ValueError(f"frames must be at least {window_size}x{window_size} for SSIM, got {H}x{W}")
    return a.reshape(-1, H, W, 3), b.reshape(-1, H, W, 3)


def _to_nchw(frames: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).to(dtype)  # (N, H, W, 3) -> (N, 3, H, W)


def ssim(a, b, window_size: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004) between uint8 frames a, b of shape (..., H, W, 3).

    Standard settings: 11x11 Gaussian window with sigma 1.5, K1=0.01, K2=0.03, data range 255,
    'valid' windows only (no padding), computed per channel and averaged over everything (in
    float64). Identical inputs give 1.0.
    """
    a, b = _frames_pair(a, b, window_size)
    return float(_ssim_map(_to_nchw(a, torch.float64), _to_nchw(b, torch.float64), window_size, sigma).mean())


def ssim_per_frame(a, b, block: int = 256, window_size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """SSIM of each frame pair, (n, H, W, 3) uint8 -> (n,) float64: the definition of `ssim`
    computed in float32 over blocks of frames -- ~50x faster than one float64 call per frame on
    long rollouts (equal to 1e-4, tested)."""
    a, b = _frames_pair(a, b, window_size)
    out = np.zeros(len(a))
    for s in range(0, len(a), block):
        m = _ssim_map(_to_nchw(a[s:s + block], torch.float32), _to_nchw(b[s:s + block], torch.float32), window_size, sigma)
        out[s:s + block] = m.mean(dim=(1, 2, 3)).double().numpy()
    return out
