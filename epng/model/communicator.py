"""Multi-modal communicator: S layers of [LPA, cross-attention to phrases, FFN] over the
visual tokens, each sub-layer followed by residual + LayerNorm (post-norm, as in the paper).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from epng.model.config import EPNGConfig
from epng.model.lpa import LocalityPerceptiveAttention


class PhraseCrossAttention(nn.Module):
    """Visual tokens (B, N, C) attend to phrase features (B, P, C); padding phrases are masked.

    A sample without any real phrase gets a zero update (no NaN from an all-masked softmax).
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)  # (B, h, n, C/h)

    def forward(self, x: Tensor, phrases: Tensor, phrase_mask: Tensor) -> Tensor:
        """x (B, N, C), phrases (B, P, C), phrase_mask (B, P) bool -> (B, N, C)."""
        has_phrase = phrase_mask.any(dim=1)  # (B,)
        keep = phrase_mask | ~has_phrase[:, None]  # all-padding rows attend to everything, zeroed below
        attn = F.scaled_dot_product_attention(
            self._heads(self.q(x)),
            self._heads(self.k(phrases)),
            self._heads(self.v(phrases)),
            attn_mask=keep[:, None, None, :],  # (B, 1, 1, P), True = attend
            dropout_p=self.dropout if self.training else 0.0,
        )
        out = self.out(attn.transpose(1, 2).flatten(2))  # (B, N, C)
        return out * has_phrase[:, None, None].to(out.dtype)


class CommunicatorLayer(nn.Module):
    """One layer: LPA -> add & norm -> phrase cross-attention -> add & norm -> FFN -> add & norm."""

    def __init__(self, config: EPNGConfig) -> None:
        super().__init__()
        c = config.d_model
        self.lpa = LocalityPerceptiveAttention(
            c, config.num_heads, dropout=config.dropout, distance=config.lpa_distance, clip=config.lpa_clip
        )
        self.cross = PhraseCrossAttention(c, config.num_heads, dropout=config.dropout)
        self.ffn = nn.Sequential(
            nn.Linear(c, config.ffn_dim), nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(config.ffn_dim, c)
        )
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(c), nn.LayerNorm(c), nn.LayerNorm(c)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, grid_size: tuple[int, int], phrases: Tensor, phrase_mask: Tensor) -> Tensor:
        x = self.norm1(x + self.drop(self.lpa(x, grid_size)))
        x = self.norm2(x + self.drop(self.cross(x, phrases, phrase_mask)))
        return self.norm3(x + self.drop(self.ffn(x)))


class Communicator(nn.Module):
    """Fused visual map (B, C, h, w) + phrases (B, P, C) -> communicated map (B, C, h, w)."""

    def __init__(self, config: EPNGConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CommunicatorLayer(config) for _ in range(config.num_layers))

    def forward(self, visual: Tensor, phrases: Tensor, phrase_mask: Tensor) -> Tensor:
        b, c, h, w = visual.shape
        x = visual.flatten(2).transpose(1, 2)  # (B, N = h*w, C), row-major grid
        for layer in self.layers:
            x = layer(x, (h, w), phrases, phrase_mask)
        return x.transpose(1, 2).reshape(b, c, h, w)

    def lpa_layers(self) -> list[LocalityPerceptiveAttention]:
        """The LPA module of every layer, first to last."""
        return [layer.lpa for layer in self.layers]
