"""A video DiT that runs bidirectional (teacher), block-causal with a mask (training) and chunk by
chunk with a KV cache (inference) -- one class, one set of weights.

Tokens: a latent video (B, C, T, h, w) is cut into p x p patches per latent frame, giving N =
(h/p)(w/p) tokens per frame, laid out time-major: token index = frame * N + patch. Each latent frame
carries its own timestep, so conditioning (timestep + the actions of the frames it covers + pooled
text) is per frame and modulates its tokens through AdaLN-Zero. Text also enters by cross-attention
with keys/values computed once per prompt. Positions: 3D RoPE over (time, row, column); half the
head dimension rotates with time, a quarter each with row and column.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from models.actions import ActionEncoder
from models.io import PretrainedMixin
from models.kv_cache import KVCache
from models.text import TEXT_DIM

DIT_SIZES = {
    # name: (dim, depth, heads) -- head_dim must be divisible by 8 (RoPE split t/y/x)
    "tiny": dict(dim=64, depth=2, num_heads=4),
    "S": dict(dim=192, depth=4, num_heads=6),
    "M": dict(dim=256, depth=6, num_heads=8),
    "B": dict(dim=384, depth=12, num_heads=6),
}


@dataclass
class DiTConfig:
    latent_channels: int = 8
    latent_height: int = 8
    latent_width: int = 12
    patch_size: int = 2
    dim: int = 192
    depth: int = 4
    num_heads: int = 6
    mlp_ratio: float = 4.0
    text_dim: int = TEXT_DIM
    action_space: dict = field(default_factory=lambda: {"type": "Discrete", "n": 2, "start": 0})
    frames_per_latent: int = 4  # video frames per latent frame: one action each
    latent_frames_per_chunk: int = 1
    action_embed_dim: int = 64
    rope_theta: float = 10000.0

    @classmethod
    def from_size(cls, size: str, **kw) -> "DiTConfig":
        if size not in DIT_SIZES:
            raise ValueError(f"size: unknown DiT size {size!r}; registered sizes are {sorted(DIT_SIZES)}")
        return cls(**{**DIT_SIZES[size], **kw})


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (B, T, N, D); shift/scale (B, T, D): one modulation per latent frame, shared by its tokens."""
    return x * (1 + scale[:, :, None]) + shift[:, :, None]


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of t in [0, 1] (scaled to 0..1000 like the paper's timesteps)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000.0)[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class RoPE3D(nn.Module):
    """Rotary positions over (time, row, column). Angles are computed in float64 so that absolute
    frame indices of very long rollouts keep full precision (scores depend on differences only)."""

    def __init__(self, head_dim: int, grid_h: int, grid_w: int, theta: float):
        super().__init__()
        assert head_dim % 8 == 0, "head_dim must be divisible by 8 for the t/y/x split"
        self.dt, self.dy = head_dim // 2, head_dim // 4
        self.theta = theta
        ys, xs = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
        ang = torch.cat([self._angles(ys.flatten(), self.dy), self._angles(xs.flatten(), self.dy)], -1)  # (N, (dy+dx)/2)
        self.register_buffer("spatial_cos", ang.cos().float(), persistent=False)
        self.register_buffer("spatial_sin", ang.sin().float(), persistent=False)

    def _angles(self, pos: torch.Tensor, d: int) -> torch.Tensor:
        freqs = self.theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
        return pos.to(torch.float64)[..., None] * freqs.to(pos.device)

    def forward(self, frame_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frame_pos (B, T) absolute frame indices -> cos, sin (B, 1, T*N, head_dim/2)."""
        B, T = frame_pos.shape
        N = self.spatial_cos.shape[0]
        ta = self._angles(frame_pos, self.dt)  # (B, T, dt/2), float64
        tcos, tsin = ta.cos().float(), ta.sin().float()
        tcos = tcos[:, :, None].expand(B, T, N, -1)
        tsin = tsin[:, :, None].expand(B, T, N, -1)
        scos = self.spatial_cos[None, None].expand(B, T, N, -1)
        ssin = self.spatial_sin[None, None].expand(B, T, N, -1)
        cos = torch.cat([tcos, scos], -1).reshape(B, 1, T * N, -1)
        sin = torch.cat([tsin, ssin], -1).reshape(B, 1, T * N, -1)
        return cos, sin


def rms_norm(x: torch.Tensor, norm: nn.RMSNorm) -> torch.Tensor:
    """`norm(x)` written out: the same numbers, but several times faster than the fused CPU
    kernel on the small, strided (B, H, 24, hd) tensors of a chunk."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps) * norm.weight


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, L, hd): rotate consecutive pairs (x0, x1) by the position's angle."""
    x0, x1 = x.unflatten(-1, (-1, 2)).unbind(-1)  # (B, H, L, hd/2) each
    return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], -1).flatten(-2)


@dataclass
class GradKV:
    """One layer's share of a gradient through the KV cache (self-forcing training, `keep_grad`).
    `prev`: (keys, values) of the whole cache buffer as the writing passes that kept their gradient
    made it, carrying their graph: a gradient-carrying pass attends to it instead of the cache's
    detached buffer (the same numbers), so a loss on this chunk reaches the chunks it reads.
    `keep`: where a writing pass that keeps its gradient leaves its (slots, keys, values)."""
    prev: tuple | None = None
    keep: list | None = None


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.h, self.hd = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.RMSNorm(self.hd, eps=1e-6)  # QK-norm: keeps logits bounded (as in Wan)
        self.k_norm = nn.RMSNorm(self.hd, eps=1e-6)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, cos, sin, attn_mask, cache_kv=None, slots=None, slot_range=None, grad_kv: "GradKV | None" = None):
        """x (B, L, D). Without a cache: attend within x under attn_mask (Lq, Lk) or (B,1,Lq,Lk).
        With a cache (k_buf, v_buf (B, H, S, hd)): write this chunk's keys/values into `slots`
        (B, L) and attend to the whole buffer under attn_mask (B, 1, 1, S). `slot_range`: the same
        slots as one range shared by every env, when they are (a slice copy instead of a scatter).
        `grad_kv`: this layer's share of a gradient through the cache (training only, see `GradKV`)."""
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.h, self.hd).permute(2, 0, 3, 1, 4)  # each (B, H, L, hd)
        q = apply_rope(rms_norm(q, self.q_norm), cos, sin)
        k = apply_rope(rms_norm(k, self.k_norm), cos, sin)
        if cache_kv is not None:
            k_buf, v_buf = cache_kv
            k, v = k.to(k_buf.dtype), v.to(v_buf.dtype)  # the cache keeps its dtype under autocast
            idx = slots[:, None, :, None].expand(B, self.h, L, self.hd)
            if torch.is_grad_enabled() and k.requires_grad:
                # a gradient-carrying pass (self-forcing training): attend to a copy with this chunk's
                # keys in its slots; the cache itself stays detached
                base_k, base_v = k_buf, v_buf
                if grad_kv is not None and grad_kv.prev is not None:  # the written chunks, with their gradient
                    used = k_buf.shape[2]
                    base_k, base_v = grad_kv.prev[0][:, :, :used], grad_kv.prev[1][:, :, :used]
                if grad_kv is not None and grad_kv.keep is not None:  # a writing pass that keeps its gradient:
                    k_buf.scatter_(2, idx, k.detach())  # the cache gets the values (what inference writes),
                    v_buf.scatter_(2, idx, v.detach())
                    grad_kv.keep.append((idx, k, v))  # and forward_chunk keeps the graph
                k, v = base_k.scatter(2, idx, k), base_v.scatter(2, idx, v)
            elif slot_range is not None:
                k_buf[:, :, slot_range] = k
                v_buf[:, :, slot_range] = v
                k, v = k_buf, v_buf
            else:
                k_buf.scatter_(2, idx, k)
                v_buf.scatter_(2, idx, v)
                k, v = k_buf, v_buf
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, L, hd)
        return self.proj(out.transpose(1, 2).reshape(B, L, D))


class CrossAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.h, self.hd = num_heads, dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def text_kv(self, text_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, Lt, D = text_tokens.shape
        k, v = self.kv(text_tokens).view(B, Lt, 2, self.h, self.hd).permute(2, 0, 3, 1, 4)  # (B, H, Lt, hd)
        return k, v

    def forward(self, x, kv, text_mask):
        B, L, D = x.shape
        q = self.q(x).view(B, L, self.h, self.hd).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=text_mask[:, None, None, :])
        return self.proj(out.transpose(1, 2).reshape(B, L, D))


class DiTBlock(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        D = cfg.dim
        self.norm1 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(D, cfg.num_heads)
        self.norm2 = nn.LayerNorm(D, eps=1e-6)
        self.cross = CrossAttention(D, cfg.num_heads)
        self.norm3 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        hidden = int(D * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(D, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, D))
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * D))

    def forward(self, x, c, cos, sin, attn_mask, text, cache_kv=None, slots=None, text_kv=None, mod=None, slot_range=None,
                grad_kv: "GradKV | None" = None):
        """x (B, T, N, D) tokens; c (B, T, D) per-frame conditioning; `mod` (B, T, 6D): adaLN(c)
        when already computed (the chunk sampler computes it once for all its passes)."""
        B, T, N, D = x.shape
        sh1, sc1, g1, sh2, sc2, g2 = (self.adaLN(c) if mod is None else mod).chunk(6, dim=-1)  # each (B, T, D)
        h = modulate(self.norm1(x), sh1, sc1).reshape(B, T * N, D)
        x = x + g1[:, :, None] * self.attn(h, cos, sin, attn_mask, cache_kv, slots, slot_range, grad_kv).view(B, T, N, D)
        kv = text_kv if text_kv is not None else self.cross.text_kv(text.tokens)
        x = x + self.cross(self.norm2(x).reshape(B, T * N, D), kv, text.mask).view(B, T, N, D)
        x = x + g2[:, :, None] * self.mlp(modulate(self.norm3(x), sh2, sc2))
        return x


@dataclass
class ChunkPlan:
    """What the passes of one chunk share: its slots in the cache, its attention mask and its RoPE
    tables. Computed once per chunk (`DiT.plan_chunk`) instead of once per denoising pass."""
    frames: int  # latent frames in the chunk
    slots: torch.Tensor  # (B, c*N) token slots of the chunk in the cache
    slot_range: slice | None  # the same slots as one range, when every env's chunk sits at the same place
    attn_mask: torch.Tensor | None  # (B, 1, 1, used) valid cache slots, None when all are
    used: int  # cache slots below this one can be valid; attention skips the rest
    cos: torch.Tensor  # (B, 1, c*N, hd/2) RoPE at the chunk's absolute positions
    sin: torch.Tensor


def shared_slot_range(slots: torch.Tensor) -> slice | None:
    """Host token slots (B, L) as one range when every env's chunk sits at the same consecutive
    slots (a slice copy then writes the cache), else None (a scatter)."""
    lo, L = int(slots[0, 0]), slots.shape[1]
    return slice(lo, lo + L) if bool((slots == torch.arange(lo, lo + L)).all()) else None


@dataclass
class PassModulation:
    """The conditioning of one pass of a chunk at one noise level: c (B, T, D), each block's
    adaLN(c) (B, T, 6D) and the output layer's (B, T, 2D)."""
    c: torch.Tensor
    blocks: list[torch.Tensor]
    final: torch.Tensor


@dataclass
class TextCond:
    """Projected prompt: tokens (B, Lt, D), mask (B, Lt) bool, pooled (B, D); `kv` holds per-layer
    cross-attention keys/values once computed (inference computes them once per prompt)."""
    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor
    kv: list | None = None


class DiT(nn.Module, PretrainedMixin):
    config_class = DiTConfig

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = cfg = config
        p = cfg.patch_size
        if cfg.latent_height % p or cfg.latent_width % p:
            raise ValueError(f"patch_size={p} must divide the latent size {cfg.latent_height}x{cfg.latent_width}")
        if cfg.dim % cfg.num_heads or (cfg.dim // cfg.num_heads) % 8:
            raise ValueError(f"dim={cfg.dim} / num_heads={cfg.num_heads} must give a head_dim divisible by 8")
        self.gh, self.gw = cfg.latent_height // p, cfg.latent_width // p
        self.tokens_per_frame = self.gh * self.gw
        D = cfg.dim
        self.patch_embed = nn.Linear(cfg.latent_channels * p * p, D)
        self.t_mlp = nn.Sequential(nn.Linear(256, D), nn.SiLU(), nn.Linear(D, D))
        self.action_encoder = ActionEncoder(cfg.action_space, cfg.frames_per_latent, cfg.action_embed_dim, D)
        self.text_proj = nn.Linear(cfg.text_dim, D)
        self.null_text = nn.Parameter(torch.randn(1, D) * 0.02)  # the CFG "null prompt" token
        self.text_pool = nn.Sequential(nn.SiLU(), nn.Linear(D, D))
        self.rope = RoPE3D(D // cfg.num_heads, self.gh, self.gw, cfg.rope_theta)
        self.blocks = nn.ModuleList([DiTBlock(cfg) for _ in range(cfg.depth)])
        self.final_norm = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.final_adaLN = nn.Sequential(nn.SiLU(), nn.Linear(D, 2 * D))
        self.final = nn.Linear(D, p * p * cfg.latent_channels)
        self.initialize_weights()

    def initialize_weights(self):
        """Xavier for linears; zero the AdaLN gates and the output layer so each block starts as
        the identity and the model starts predicting v = 0 (AdaLN-Zero, as in DiT); zero the
        cross-attention output so text is faded in by training."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for blk in self.blocks:
            nn.init.zeros_(blk.adaLN[-1].weight)
            nn.init.zeros_(blk.adaLN[-1].bias)
            nn.init.zeros_(blk.cross.proj.weight)
        nn.init.zeros_(self.final_adaLN[-1].weight)
        nn.init.zeros_(self.final_adaLN[-1].bias)
        nn.init.zeros_(self.final.weight)
        nn.init.zeros_(self.final.bias)

    # -- conditioning ---------------------------------------------------------------------------
    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor, is_null: torch.Tensor, with_kv: bool = False) -> TextCond:
        """MiniLM tokens (B, Lt, 384) -> TextCond. Rows with is_null use the learned null prompt."""
        proj = self.text_proj(tokens)  # (B, Lt, D)
        null_tok = torch.zeros_like(proj)
        null_tok[:, 0] = self.null_text[0]
        null_mask = torch.zeros_like(mask)
        null_mask[:, 0] = True
        nb = is_null.to(proj.device)[:, None]
        proj = torch.where(nb[..., None], null_tok, proj)
        mask = torch.where(nb, null_mask, mask)
        m = mask.float()[..., None]
        pooled = self.text_pool((proj * m).sum(1) / m.sum(1).clamp(min=1))
        cond = TextCond(proj, mask, pooled)
        if with_kv:
            cond.kv = [blk.cross.text_kv(proj) for blk in self.blocks]
        return cond

    def frame_conditioning(self, t, action_feats, action_null, text: TextCond) -> torch.Tensor:
        """(B, T) timesteps + per-frame actions -> per-latent-frame conditioning (B, T, D)."""
        c = self.t_mlp(timestep_embedding(t, 256))
        c = c + self.action_encoder(action_feats, action_null)
        return c + text.pooled[:, None]

    # -- patches ---------------------------------------------------------------------------------
    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T, h, w = x.shape
        p = self.config.patch_size
        x = x.view(B, C, T, self.gh, p, self.gw, p).permute(0, 2, 3, 5, 1, 4, 6)  # (B, T, gh, gw, C, p, p)
        return self.patch_embed(x.reshape(B, T, self.tokens_per_frame, C * p * p))  # (B, T, N, D)

    def unpatchify(self, y: torch.Tensor) -> torch.Tensor:
        B, T, N, _ = y.shape
        p, C = self.config.patch_size, self.config.latent_channels
        y = y.view(B, T, self.gh, self.gw, C, p, p).permute(0, 4, 1, 2, 5, 3, 6)  # (B, C, T, gh, p, gw, p)
        return y.reshape(B, C, T, self.gh * p, self.gw * p)

    def _head(self, x, c, mod=None):
        sh, sc = (self.final_adaLN(c) if mod is None else mod).chunk(2, dim=-1)
        return self.unpatchify(self.final(modulate(self.final_norm(x), sh, sc)))

    def _check(self, x, t, action_feats, action_null):
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.latent_channels or x.shape[3:] != (cfg.latent_height, cfg.latent_width):
            raise ValueError(f"x: expected latents (B, {cfg.latent_channels}, T, {cfg.latent_height}, {cfg.latent_width}), got {tuple(x.shape)}")
        B, _, T = x.shape[:3]
        if t.shape != (B, T):
            raise ValueError(f"t: expected per-frame timesteps of shape {(B, T)}, got {tuple(t.shape)}")
        if action_feats.shape[:2] != (B, T * cfg.frames_per_latent) or action_null.shape != (B, T * cfg.frames_per_latent):
            raise ValueError(f"action_feats/action_null: expected (B, T*{cfg.frames_per_latent}, ...) = {(B, T * cfg.frames_per_latent)}, got {tuple(action_feats.shape)} / {tuple(action_null.shape)}")

    # -- the three ways to run -------------------------------------------------------------------
    def forward(self, x, t, action_feats, action_null, text: TextCond, frame_pos=None, frame_mask=None, x_clean=None, t_clean=None):
        """Full-sequence forward. x (B, C, T, h, w) latents at per-frame noise levels t (B, T).
        frame_mask None: bidirectional (teacher). frame_mask (T, T) bool: e.g. block-causal
        (models.masks). Returns the velocity prediction (B, C, T, h, w).
        With `x_clean` (B, C, T, h, w): teacher forcing, see `forward_teacher_forcing`."""
        if x_clean is not None:
            return self.forward_teacher_forcing(x, t, x_clean, action_feats, action_null, text, frame_mask, t_clean)
        self._check(x, t, action_feats, action_null)
        B, _, T = x.shape[:3]
        N = self.tokens_per_frame
        tokens = self.patchify(x)
        c = self.frame_conditioning(t, action_feats, action_null, text)
        if frame_pos is None:
            frame_pos = torch.arange(T, device=x.device)
        if frame_pos.ndim == 1:
            frame_pos = frame_pos[None].expand(B, T)
        cos, sin = self.rope(frame_pos)
        attn_mask = None
        if frame_mask is not None:
            attn_mask = frame_mask.repeat_interleave(N, -1).repeat_interleave(N, -2)  # frames -> tokens
        for i, blk in enumerate(self.blocks):
            tokens = blk(tokens, c, cos, sin, attn_mask, text, text_kv=None if text.kv is None else text.kv[i])
        return self._head(tokens, c)

    def forward_teacher_forcing(self, x_noisy, t, x_clean, action_feats, action_null, text: TextCond, frame_mask: torch.Tensor,
                                t_clean: torch.Tensor | None = None):
        """Block-causal training with a clean context: the sequence [x_clean | x_noisy] under
        `models.masks.teacher_forcing_mask`; returns the velocity for the noisy copy only.
        `t_clean` (B, T): noise levels of the context copy (context-noise augmentation; default 0),
        matching a cache written at that level at inference."""
        T = x_noisy.shape[2]
        x = torch.cat([x_clean, x_noisy], dim=2)
        tt = torch.cat([torch.zeros_like(t) if t_clean is None else t_clean.to(t), t], dim=1)
        af = torch.cat([action_feats, action_feats], dim=1)
        an = torch.cat([action_null, action_null], dim=1)
        pos = torch.arange(T, device=x.device).repeat(2)
        return self.forward(x, tt, af, an, text, frame_pos=pos, frame_mask=frame_mask)[:, :, T:]

    def new_cache(self, batch_size: int, window_frames: int, sink_frames: int = 0, device=None, fused_writes: bool = False) -> KVCache:
        cfg = self.config
        return KVCache(num_layers=cfg.depth, batch_size=batch_size, num_heads=cfg.num_heads, head_dim=cfg.dim // cfg.num_heads,
                       tokens_per_frame=self.tokens_per_frame, window_frames=window_frames, chunk_frames=cfg.latent_frames_per_chunk,
                       sink_frames=sink_frames, device=device or next(self.parameters()).device, fused_writes=fused_writes)

    def plan_chunk(self, cache: KVCache, frames: int) -> ChunkPlan:
        """Claim the cache slots of the next chunk of `frames` latent frames (see
        `KVCache.begin_chunk`) and compute what all its passes share."""
        frame_pos, slots, valid = cache.begin_chunk(frames)  # host tensors: deciding below never waits for a GPU
        dev = cache.device
        cos, sin = self.rope(frame_pos.to(dev))
        # (B, 1, 1, S); once the window is full every slot is valid and SDPA can skip the mask
        attn_mask = None if bool(valid.all()) else valid[:, None, None, :].to(dev)
        return ChunkPlan(frames, slots.to(dev), shared_slot_range(slots), attn_mask, valid.shape[1], cos, sin)

    def plan_fused(self, cache: KVCache, pending: torch.Tensor) -> ChunkPlan:
        """The plan of a pass over two chunks (see `KVCache.begin_fused`): a finished chunk writing
        its keys/values and the next chunk's first denoising step, each under its own mask."""
        c = self.config.latent_frames_per_chunk
        frame_pos, slots, valid = cache.begin_fused(pending)  # host tensors
        dev = cache.device
        cos, sin = self.rope(frame_pos.to(dev))
        n = c * self.tokens_per_frame
        attn_mask = valid.to(dev).repeat_interleave(n, dim=1)[:, None]  # (B, 1, 2n, used): rows of chunk 1, then chunk 2
        return ChunkPlan(2 * c, slots.to(dev), shared_slot_range(slots), attn_mask, valid.shape[2], cos, sin)

    def pass_modulations(self, levels, action_feats, action_null, text: TextCond) -> list[PassModulation]:
        """The conditioning of a chunk's passes at noise levels `levels` (P floats), computed in one
        batched call per layer: the actions and the prompt are the same for every pass, only the
        timestep differs. Returns one `PassModulation` per level."""
        P = len(levels)
        t = torch.as_tensor([float(x) for x in levels], dtype=torch.float32, device=action_feats.device)
        t_emb = self.t_mlp(timestep_embedding(t, 256))  # (P, D), one row per level
        act = self.action_encoder(action_feats, action_null)  # (B, T, D)
        c = (t_emb[None, :, None] + act[:, None]) + text.pooled[:, None, None]  # (B, P, T, D), the sums of frame_conditioning
        blocks = [blk.adaLN(c) for blk in self.blocks]  # each (B, P, T, 6D)
        final = self.final_adaLN(c)
        return [PassModulation(c[:, p], [m[:, p] for m in blocks], final[:, p]) for p in range(P)]

    def forward_chunk(self, x, t, action_feats, action_null, text: TextCond, cache: KVCache, write: bool,
                      plan: ChunkPlan | None = None, mod: PassModulation | None = None, keep_grad: bool = False):
        """One chunk (B, C, c, h, w) attending to the cache and to itself. Its keys/values are
        written to the chunk's slots; `write=True` (the clean pass at t = 0) keeps them for the
        following chunks, `write=False` (a denoising step) leaves the slots to be overwritten.

        `plan` / `mod`: this chunk's shared constants and this pass's conditioning, when the caller
        computed them once for all passes (`plan_chunk`, `pass_modulations`; `t` must then be the
        level `mod` was made for). Without them they are computed here: the same numbers.

        `keep_grad` (a writing pass under autograd, self-forcing training): the written keys/values
        keep their graph, and later chunks' gradient-carrying passes attend to them, so a loss on a
        later chunk also reaches this one (its input and this pass's weights) instead of only teaching
        the later chunk to make up for it. The cache's buffers get the same values, detached: the
        numbers every pass computes are unchanged. A write without it ends the gradient path."""
        self._check(x, t, action_feats, action_null)
        if keep_grad and not (write and torch.is_grad_enabled()):
            raise ValueError("forward_chunk: keep_grad needs write=True under autograd (torch.enable_grad)")
        if text.kv is None:
            text.kv = [blk.cross.text_kv(text.tokens) for blk in self.blocks]
        c_frames = x.shape[2]
        if plan is None:
            plan = self.plan_chunk(cache, c_frames)
        elif plan.frames != c_frames:
            raise ValueError(f"plan: made for {plan.frames} latent frames, the chunk has {c_frames}")
        tokens = self.patchify(x)
        c = self.frame_conditioning(t, action_feats, action_null, text) if mod is None else mod.c
        prev, kept = cache.grad_kv, ([] if keep_grad else None)
        for i, blk in enumerate(self.blocks):
            kv = (cache.k[i][:, :, :plan.used], cache.v[i][:, :, :plan.used])  # views: writes land in the cache
            gkv = GradKV(None if prev is None else prev[i], kept) if (prev is not None or keep_grad) else None
            tokens = blk(tokens, c, plan.cos, plan.sin, plan.attn_mask, text, cache_kv=kv, slots=plan.slots, text_kv=text.kv[i],
                         mod=None if mod is None else mod.blocks[i], slot_range=plan.slot_range, grad_kv=gkv)
        if write:
            if keep_grad:  # the buffers with the graph of every chunk written so far (the detached ones hold the same numbers)
                base = prev if prev is not None else [(cache.k[i], cache.v[i]) for i in range(len(self.blocks))]
                cache.grad_kv = [(bk.scatter(2, idx, k), bv.scatter(2, idx, v)) for (bk, bv), (idx, k, v) in zip(base, kept)]
            else:  # a detached write ends the gradient path
                cache.grad_kv = None
            cache.advance(c_frames)
        return self._head(tokens, c, None if mod is None else mod.final)
