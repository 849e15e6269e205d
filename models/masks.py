"""Frame-level attention masks. `mask[i, j] = True` means frame i may attend to frame j; the DiT
expands them to tokens. Time runs along both axes; chunk(f) = f // chunk_frames."""
from __future__ import annotations

import torch


def block_causal_mask(num_frames: int, chunk_frames: int, window_frames: int | None = None, sink_frames: int = 0, device="cpu") -> torch.Tensor:
    """Frame i attends to frame j iff chunk(j) <= chunk(i); with a window, also j >= start(chunk(i))
    - window_frames (or j < sink_frames, the attention sink). Matches the KV-cache inference."""
    f = torch.arange(num_frames, device=device)
    ci, cj = (f // chunk_frames)[:, None], (f // chunk_frames)[None, :]
    mask = cj <= ci
    if window_frames is not None:
        start = ci * chunk_frames
        mask &= (f[None, :] >= start - window_frames) | (f[None, :] < sink_frames)
    return mask


def teacher_forcing_mask(num_frames: int, chunk_frames: int, window_frames: int | None = None, sink_frames: int = 0, device="cpu") -> torch.Tensor:
    """Mask for the sequence [clean copy (num_frames) | noisy copy (num_frames)].

    Clean frames attend block-causally to clean frames (they stand for what the KV cache holds);
    a noisy frame of chunk i attends to clean frames of chunks < i and noisy frames of chunk i.
    This is exactly what chunk-by-chunk inference sees: a clean cache and the chunk being denoised.
    """
    bc = block_causal_mask(num_frames, chunk_frames, window_frames, sink_frames, device)
    f = torch.arange(num_frames, device=device)
    ci, cj = (f // chunk_frames)[:, None], (f // chunk_frames)[None, :]
    earlier = bc & (cj < ci)
    same = ci == cj
    top = torch.cat([bc, torch.zeros_like(bc)], dim=1)
    bottom = torch.cat([earlier, same], dim=1)
    return torch.cat([top, bottom], dim=0)
