"""Marked vision towers: stand-ins with a family's call signature whose output says where a token sits.

A planted model needs every video token to carry its in-frame position (the anchor markers) and a
little pixel content of fixed norm. Where the family's own tower cannot be made to do that in its
weights, the planted model swaps it for one of these; everything downstream of the tower (pixel
shuffle, projector, the LM, its RoPE and the adapter) stays the real one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from hermes_policy.models.planted.config import TOKENS_PER_FRAME
from hermes_policy.models.planted.weights import CONTENT, Basis

#: channels of a grid tower's indicator code: video, then one per marker slot
CODE = 4


class MarkedPatchTower(nn.Module):
    """Stands in for Qwen's vision tower: per merged patch, a pixel projection (fixed norm) plus a per-position
    embedding.

    Same call as ``model.model.visual``: ``(pixel_values (N, C·T·P·P), grid_thw (G, 3))`` -> an output whose
    ``pooler_output`` is (N / merge², hidden), merged tokens row-major over each temporal group. With
    ``deepstack`` > 0 (Qwen3-VL) the output also has ``deepstack_features``: that many zero tensors of the
    same shape, so the real DeepStack path runs (the adapter carries them, the decoder adds them) and adds nothing.
    """

    def __init__(self, in_features: int, hidden: int, merge: int, deepstack: int = 0) -> None:
        super().__init__()
        self.merge = merge
        self.deepstack = deepstack
        self.proj = nn.Linear(in_features, hidden, bias=False)
        self.cell_embed = nn.Parameter(torch.zeros(TOKENS_PER_FRAME, hidden))

    @property
    def dtype(self) -> torch.dtype:
        return self.proj.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.proj.weight.device

    def forward(self, hidden_states: torch.Tensor, grid_thw: torch.Tensor, **kwargs):
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        content = self.proj(hidden_states.to(self.dtype))
        content = content.view(-1, self.merge * self.merge, content.shape[-1]).mean(1)
        # a fixed norm, so that the RMSNorm in front of every layer scales all video tokens alike
        content = CONTENT * content / content.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        index = torch.cat([torch.arange(int(h) * int(w) // self.merge ** 2).repeat(int(t)) for t, h, w in grid_thw])
        cells = self.cell_embed[index.clamp(max=TOKENS_PER_FRAME - 1).to(self.cell_embed.device)]
        pooled = content + cells
        if not self.deepstack:
            return BaseModelOutputWithPooling(last_hidden_state=content, pooler_output=pooled)
        from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

        return BaseModelOutputWithDeepstackFeatures(last_hidden_state=content, pooler_output=pooled,
                                                    deepstack_features=[torch.zeros_like(pooled)
                                                                        for _ in range(self.deepstack)])


def shuffle_layout(shuffle: Callable[[torch.Tensor], torch.Tensor], patches: int,
                   channels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where a pixel shuffle puts each patch's channels, read off the family's own shuffle.

    Args:
        shuffle: (1, patches, channels) -> (1, tokens, r·channels), the model's pixel shuffle.

    Returns:
        ``token_of_patch`` (patches,): the merged token each patch lands in; ``patch_of`` (tokens, r·channels)
        and ``channel_of`` (r·channels,): the source patch and channel of every merged channel (the channel
        layout is the same for every token).
    """
    x = torch.arange(patches * channels, dtype=torch.float64).view(1, patches, channels)
    y = shuffle(x)[0].round().long()
    patch_of, channel_of = y // channels, y % channels
    if not bool((channel_of == channel_of[:1]).all()):
        raise ValueError("the pixel shuffle's channel layout differs between tokens")
    token_of_patch = torch.empty(patches, dtype=torch.long)
    for t in range(patch_of.shape[0]):
        token_of_patch[patch_of[t]] = t
    return token_of_patch, patch_of, channel_of[0]


class MarkedGridTower(nn.Module):
    """Stands in for a ViT tower (InternViT, SmolVLM's SigLIP): per patch, the indicator code of the merged
    token it will be shuffled into, plus its own pixel content at a fixed norm.

    Call: ``(pixel_values (N, 3, S, S), **kwargs)`` -> ``last_hidden_state`` (N, [1 +] (S/p)², channels): per
    patch ``z = [code (4), content]``, zero-padded to ``channels`` or, with ``mirror``, ``[z, -z]`` (zero mean,
    so a LayerNorm after the shuffle only scales it); ``cls`` prepends a zero row the family drops.
    """

    def __init__(self, patch: int, side: int, channels: int, code: torch.Tensor, token_of_patch: torch.Tensor,
                 content_norm: float, mirror: bool = False, cls: bool = False) -> None:
        super().__init__()
        self.patch, self.side, self.channels = patch, side, channels
        self.mirror, self.cls, self.content_norm = mirror, cls, content_norm
        width = channels // 2 if mirror else channels
        self.content_dims = width - CODE
        if self.content_dims < 1:
            raise ValueError("the tower needs room for content beside the code")
        self.proj = nn.Linear(3 * patch * patch, self.content_dims, bias=False)
        self.cell_code = nn.Parameter(code[token_of_patch].to(torch.float32))  # (patches, CODE)

    @property
    def dtype(self) -> torch.dtype:
        return self.proj.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.proj.weight.device

    def forward(self, pixel_values: torch.Tensor, **kwargs):
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        n, p = pixel_values.shape[0], self.patch
        x = pixel_values.to(self.dtype).unfold(2, p, p).unfold(3, p, p)  # (N, 3, side, side, p, p)
        x = x.permute(0, 2, 3, 1, 4, 5).reshape(n, self.side * self.side, 3 * p * p)
        content = self.proj(x)
        content = self.content_norm * content / content.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        z = torch.cat([self.cell_code.expand(n, -1, -1), content], dim=-1)
        out = torch.cat([z, -z], dim=-1) if self.mirror else torch.cat(
            [z, z.new_zeros(n, z.shape[1], self.channels - z.shape[-1])], dim=-1)
        if self.cls:
            out = torch.cat([out.new_zeros(n, 1, self.channels), out], dim=1)
        return BaseModelOutputWithPooling(last_hidden_state=out)


def grid_projection(basis: Basis, channel_of: torch.Tensor, content_dims: int,
                    gen: torch.Generator) -> torch.Tensor:
    """(hidden, r·channels) map of a shuffled token's channels into the hidden space: the mean of its patches'
    codes onto the video and marker directions; their contents, concatenated, onto the content dimensions by
    an isometry (so a token's content norm is exactly its patches' combined norm). Mirror channels map to 0."""
    per_token = int((channel_of == 0).sum())  # patches per merged token
    w = torch.zeros(basis.hidden, channel_of.numel(), dtype=torch.float64)
    indicator = basis.indicators
    content_channels = []
    for j, c in enumerate(channel_of.tolist()):
        if c < CODE:
            w[indicator[c], j] = 1.0 / per_token
        elif c < CODE + content_dims:
            content_channels.append(j)
    n_content = basis.hidden - basis.content.start
    if len(content_channels) > n_content:
        raise ValueError(f"{len(content_channels)} content channels do not fit {n_content} content dimensions")
    iso, _ = torch.linalg.qr(torch.randn(n_content, len(content_channels), generator=gen, dtype=torch.float64))
    w[basis.content.start:, content_channels] = iso
    return w


__all__ = ["MarkedGridTower", "MarkedPatchTower", "grid_projection", "shuffle_layout"]
