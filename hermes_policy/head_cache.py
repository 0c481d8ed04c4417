"""The per-KV-head compact cache: every (layer, KV head) holds its own rows, stored without padding.

:class:`HeadCache` is a :class:`~hermes_policy.cache.CompactCache` whose cache layers are ragged: KV head
``h`` of layer ``l`` holds ``S_lh`` rows of keys and values, each head in its own (S_lh, D) tensor, with
its own (A, S_lh) positions and ``S_lh`` metadata rows. Nothing is padded to the longest head, so
:attr:`kv_bytes` is ``sum_h S_lh * D * 2 * dtype bytes``: pruning one head really frees its rows. This is
the layout the study's per-head tiers need (heads of one layer pruned by different rules); masking rows
per head in a dense cache, as kvpress does, saves no memory.

Grouped-query models: the unit is the KV head, and the ``Hq / Hkv`` query heads of a group all attend
to their KV head's rows (:func:`hermes_policy.attention.hermes_attention` computes each group against its
own head's keys). Positions are per head: per-layer tails (:attr:`layer_tails`) place each head's new rows
one past that head's own last row, and a re-index ranks each head's positions on their own.

The transaction contract is the per-layer cache's: :meth:`begin` stages, a forward appends to every head,
:meth:`commit` keeps, :meth:`rollback` cuts every head back to its length at :meth:`begin`. The per-layer
accessors (:meth:`keys`, :meth:`positions`, :meth:`meta`, :meth:`evict`, ...) refuse, naming the per-head
one, because a layer's heads hold different rows; :meth:`layer_len` is the longest head's count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hermes_policy.cache import CompactCache, _restore
from hermes_policy.rope import RotarySpec
from hermes_policy.tokens import TokenMeta


@dataclass
class _StagedHeads:
    """Per cache layer, each head's committed length when staging began and its tail shift."""

    lengths: list[list[int]]
    shifts: list[list[int]]
    rotations: dict = field(default_factory=dict)  # (layer, device) -> the heads' tail rotation


def _refuse(what: str, instead: str):
    def method(self, *args, **kwargs):
        raise RuntimeError(f"{what} reads or edits a whole layer, but this is a per-head cache whose heads hold "
                           f"different rows; use {instead}")
    method.__name__ = what
    return method


class HeadCache(CompactCache):
    """Per (layer, KV head) keys, values, positions and token metadata (see the module docstring).

    Shapes: head ``h`` of cache layer ``l`` holds keys and values of shape (S_lh, D) (staged rows included
    while a write is staged), positions (A, S_lh) long and ``S_lh`` metadata rows (committed rows only).
    """

    granularity = "head"

    def __init__(self, num_layers: int, rotary: RotarySpec, layer_types: list[str] | None = None) -> None:
        super().__init__(num_layers, rotary, layer_types)
        self._head_keys: list[list[torch.Tensor]] = [[] for _ in range(num_layers)]
        self._head_values: list[list[torch.Tensor]] = [[] for _ in range(num_layers)]
        self._head_positions: list[list[torch.Tensor]] = [[] for _ in range(num_layers)]
        self._head_meta: list[list[TokenMeta]] = [[] for _ in range(num_layers)]
        self._heads_staged: _StagedHeads | None = None

    # ------------------------------------------------------------------ shape
    @property
    def num_kv_heads(self) -> int:
        """KV heads per layer (0 before the first write: the count comes with the first keys)."""
        return len(self._head_keys[0]) if self.num_layers else 0

    def head_lengths(self, layer: int) -> list[int]:
        """Committed rows of each KV head of ``layer``."""
        return [p.shape[1] for p in self._head_positions[layer]]

    def layer_len(self, layer: int) -> int:
        """Committed rows of the layer's longest head (the most any query of the layer attends to)."""
        return max(self.head_lengths(layer), default=0)

    def head_keys(self, layer: int, head: int) -> torch.Tensor:
        """(S_lh, D) committed keys of one KV head (after RoPE)."""
        return self._head_keys[layer][head][: self._head_positions[layer][head].shape[1]]

    def head_values(self, layer: int, head: int) -> torch.Tensor:
        return self._head_values[layer][head][: self._head_positions[layer][head].shape[1]]

    def head_positions(self, layer: int, head: int) -> torch.Tensor:
        """(A, S_lh) positions of one head's committed rows."""
        return self._head_positions[layer][head]

    def head_meta(self, layer: int, head: int) -> TokenMeta:
        return self._head_meta[layer][head]

    def attended(self, layer: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per KV head, the (S_lh, D) keys and values its queries attend to now, staged rows last."""
        return self._head_keys[layer], self._head_values[layer]

    def head_shifts(self, layer: int) -> list[int]:
        """Per KV head, how far its staged rows sit from the staged positions (zeros without tails)."""
        staged = self._heads_staged
        if staged is None:
            return [0] * self.num_kv_heads
        return staged.shifts[layer]

    def layer_shift(self, layer: int) -> int:
        # the heads of a layer move by different amounts; the attention function reads head_shifts instead
        return 0

    def head_staged_positions(self, layer: int, head: int) -> torch.Tensor:
        """(A, n) positions the staged rows take in one head."""
        staged = self._require_staged()
        shift = self.head_shifts(layer)[head]
        return staged.positions + shift if shift else staged.positions

    keys = _refuse("keys", "head_keys(layer, head)")
    values = _refuse("values", "head_values(layer, head)")
    positions = _refuse("positions", "head_positions(layer, head)")
    meta = _refuse("meta", "head_meta(layer, head)")
    key_positions = _refuse("key_positions", "head_positions(layer, head) and head_staged_positions")
    key_meta = _refuse("key_meta", "head_meta(layer, head)")
    evict = _refuse("evict", "evict_heads(layer, keeps)")
    replace_row = _refuse("replace_row", "evict_heads(layer, keeps, appended)")
    replace_layer = _refuse("replace_layer", "evict_heads(layer, keeps, appended)")
    set_row_meta = _refuse("set_row_meta", "evict_heads(layer, keeps, appended)")
    crop = _refuse("crop", "evict_heads(layer, keeps)")

    def get_seq_length(self, layer_idx: int = 0) -> int:
        layer = self.cache_layer(layer_idx)
        if layer is None:
            return super().get_seq_length(layer_idx)
        return max((k.shape[0] for k in self._head_keys[layer]), default=0)

    def video_count(self, layer: int) -> float:
        """Video rows of the layer, averaged over its KV heads."""
        counts = [int(m.is_video.sum()) for m in self._head_meta[layer]]
        return sum(counts) / len(counts) if counts else 0

    def video_counts(self, layer: int) -> list[int]:
        """Video rows of each KV head of ``layer``."""
        return [int(m.is_video.sum()) for m in self._head_meta[layer]]

    @property
    def next_position(self) -> int:
        tops = [int(p.max()) + 1 for heads in self._head_positions for p in heads if p.numel()]
        return max(tops, default=0)

    def _head_tensors(self):
        for layer in range(self.num_layers):
            yield from zip(self._head_keys[layer], self._head_values[layer])

    @property
    def kv_bytes(self) -> int:
        """Bytes of key and value storage held: the sum over heads of rows x head_dim x 2 x dtype bytes."""
        return sum(k.untyped_storage().nbytes() + v.untyped_storage().nbytes() for k, v in self._head_tensors())

    @property
    def kv_bytes_by_device(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for k, v in self._head_tensors():
            totals[str(k.device)] = totals.get(str(k.device), 0) + k.untyped_storage().nbytes() + \
                v.untyped_storage().nbytes()
        return totals

    @property
    def nbytes(self) -> int:
        side = sum(p.untyped_storage().nbytes() + m.nbytes
                   for layer in range(self.num_layers)
                   for p, m in zip(self._head_positions[layer], self._head_meta[layer]))
        return self.kv_bytes + side + self.recurrent_bytes

    def lengths(self) -> list[int]:
        return [self.layer_len(i) for i in range(self.num_layers)]

    def all_head_lengths(self) -> list[list[int]]:
        """Per layer, each KV head's committed rows."""
        return [self.head_lengths(i) for i in range(self.num_layers)]

    def _dense_kv(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The heads stacked into (1, Hkv, S, D), when every head of the layer holds the same count of rows;
        a ragged layer has no dense form (so :meth:`to_dynamic` refuses it)."""
        lengths = self.head_lengths(layer)
        if len(set(lengths)) > 1:
            raise RuntimeError(f"layer {layer}'s heads hold {lengths} rows; a ragged cache has no DynamicCache form")
        heads = range(len(lengths))
        return (torch.stack([self.head_keys(layer, h) for h in heads])[None].clone(),
                torch.stack([self.head_values(layer, h) for h in heads])[None].clone())

    # ------------------------------------------------------------- transactions
    def begin(self, positions: torch.Tensor, meta: TokenMeta) -> None:
        super().begin(positions, meta)
        staged = self._require_staged()
        shifts = [self._head_tail_shifts(layer, staged.positions) for layer in range(self.num_layers)]
        self._heads_staged = _StagedHeads(self.all_head_lengths(), shifts)

    def _head_tail_shifts(self, layer: int, positions: torch.Tensor) -> list[int]:
        if not self.layer_tails or positions.numel() == 0:
            return [0] * len(self._head_positions[layer])
        start = int(positions.min())
        return [min(0, int(p.max()) + 1 - start) if p.numel() else 0 for p in self._head_positions[layer]]

    def _tail_shifts(self, positions: torch.Tensor) -> list[int] | None:
        return None  # per head, in _head_tail_shifts

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Append a forward's (1, Hkv, n, D) new keys and values to each head, keys moved to each head's own
        positions first when tails are on; returns them as given (the attention function reads the heads)."""
        layer = self.cache_layer(layer_idx)
        if layer is None:
            raise RuntimeError(f"model layer {layer_idx} has no KV cache")
        if self._heads_staged is None:
            raise RuntimeError("a per-head cache takes rows only inside a staged write (begin / transaction)")
        heads = key_states.shape[1]
        if not self._head_keys[layer]:
            self._init_heads(heads, key_states)
        elif heads != len(self._head_keys[layer]):
            raise ValueError(f"layer {layer} holds {len(self._head_keys[layer])} KV heads, got keys for {heads}")
        rotation = self.head_rotation(layer, key_states.device)
        if rotation is not None:
            key_states = RotarySpec.apply(key_states, *rotation)
        for h in range(heads):
            self._head_keys[layer][h] = torch.cat([self._head_keys[layer][h], key_states[0, h]])
            self._head_values[layer][h] = torch.cat([self._head_values[layer][h], value_states[0, h]])
        return key_states, value_states

    def head_rotation(self, layer: int, device) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(Hkv, 1, R) cosines and sines that move a staged row of each head by that head's tail shift (one
        angle per head, whatever the row: the shift is the same for all of them); None when no head moves.

        Made once per layer and staged write, for the keys here and the queries in the attention function.
        """
        staged = self._heads_staged
        if staged is None or not any(staged.shifts[layer]):
            return None
        key = (layer, str(device))
        if key not in staged.rotations:
            delta = torch.tensor(staged.shifts[layer])[None].expand(self.rotary.n_axes, -1)  # (A, Hkv)
            cos, sin = self.rotary.cos_sin(delta.to(device))  # (Hkv, R)
            staged.rotations[key] = (cos[:, None], sin[:, None])
        return staged.rotations[key]

    def _init_heads(self, heads: int, like: torch.Tensor) -> None:
        """Make the empty per-head stores once the KV head count is known (every layer has the same)."""
        d = like.shape[-1]
        for layer in range(self.num_layers):
            empty = like.new_empty(0, d)
            self._head_keys[layer] = [empty.clone() for _ in range(heads)]
            self._head_values[layer] = [empty.clone() for _ in range(heads)]
            self._head_positions[layer] = [torch.empty(self.rotary.n_axes, 0, dtype=torch.long)
                                           for _ in range(heads)]
            self._head_meta[layer] = [TokenMeta.empty() for _ in range(heads)]
        self._heads_staged.lengths = self.all_head_lengths()
        self._heads_staged.shifts = [[0] * heads for _ in range(self.num_layers)]

    def commit(self) -> None:
        staged = self._require_staged()
        heads = self._heads_staged
        n = len(staged.meta)
        for layer in range(self.num_layers):
            for h, before in enumerate(heads.lengths[layer]):
                got = self._head_keys[layer][h].shape[0]
                if got != before + n:
                    raise RuntimeError(f"layer {layer} head {h} holds {got} rows, expected {before + n} after "
                                       "the forward")
                self._head_positions[layer][h] = torch.cat([self._head_positions[layer][h],
                                                            self.head_staged_positions(layer, h)], dim=1)
                self._head_meta[layer][h] = TokenMeta.cat([self._head_meta[layer][h], staged.meta])
        self._staged = None
        self._heads_staged = None

    def rollback(self) -> None:
        staged = self._require_staged()
        for layer in range(self.num_layers):
            lengths = self._heads_staged.lengths[layer] if self._heads_staged is not None else []
            for h, n in enumerate(lengths):
                if self._head_keys[layer][h].shape[0] > n:
                    # clone() so the storage that held the discarded rows is really released
                    self._head_keys[layer][h] = self._head_keys[layer][h][:n].clone()
                    self._head_values[layer][h] = self._head_values[layer][h][:n].clone()
        for m, snapshot in (staged.recurrent or {}).items():
            _restore(self.layers[m], snapshot)
        self._staged = None
        self._heads_staged = None

    @property
    def is_empty(self) -> bool:
        if any(self.layer_len(i) for i in range(self.num_layers)):
            return False
        return super().is_empty

    # ------------------------------------------------------------------ editing
    def evict_heads(
        self,
        layer: int,
        keeps: list[torch.Tensor],
        appended: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor, TokenMeta]] | None = None,
    ) -> None:
        """Keep rows ``keeps[h]`` of each head, in the given order, then append ``appended[h]`` rows.

        Args:
            keeps: one (K_h,) long index tensor per KV head into that head's committed rows.
            appended: per head, (keys (m, D), values (m, D), positions (A, m), meta) of new rows (e.g. a
                summary row), put after the kept ones.
        """
        if self._staged is not None:
            raise RuntimeError("cannot evict while a write is staged")
        if len(keeps) != self.num_kv_heads:
            raise ValueError(f"{len(keeps)} keep lists for {self.num_kv_heads} KV heads")
        appended = appended or {}
        for h, keep in enumerate(keeps):
            keep = keep.to(torch.long).cpu()
            n = self._head_positions[layer][h].shape[1]
            if keep.numel() and (int(keep.min()) < 0 or int(keep.max()) >= n):
                raise IndexError(f"keep indices out of range for layer {layer} head {h} with {n} rows")
            extra = appended.get(h)
            if extra is None and keep.numel() == n and torch.equal(keep, torch.arange(n)):
                continue
            device_keep = keep.to(self._head_keys[layer][h].device)
            keys = self._head_keys[layer][h].index_select(0, device_keep)
            values = self._head_values[layer][h].index_select(0, device_keep)
            positions = self._head_positions[layer][h].index_select(1, keep)
            meta = self._head_meta[layer][h].select(keep)
            if extra is not None:
                k, v, p, m = extra
                keys = torch.cat([keys, k.to(keys.device, keys.dtype)])
                values = torch.cat([values, v.to(values.device, values.dtype)])
                positions = torch.cat([positions, p.to(torch.long).cpu()], dim=1)
                meta = TokenMeta.cat([meta, m])
            self._head_keys[layer][h], self._head_values[layer][h] = keys, values
            self._head_positions[layer][h], self._head_meta[layer][h] = positions, meta
            self.version += 1

    def reindex(self, layer: int, new_positions: torch.Tensor | None = None) -> None:
        """Dense re-index of each head of ``layer`` on its own (``new_positions`` is per layer: refused)."""
        if new_positions is not None:
            raise RuntimeError("a per-head cache re-indexes each head to its own dense ranks; "
                               "reindex_head(layer, head, positions) moves one head")
        for h in range(len(self._head_positions[layer])):
            self.reindex_head(layer, h)

    def reindex_head(self, layer: int, head: int, new_positions: torch.Tensor | None = None) -> None:
        """Move one head's rows to ``new_positions`` ((A, S_lh); default its dense ranks), rotating its keys."""
        moved = self._moved(self._head_positions[layer][head], self._head_keys[layer][head], new_positions)
        if moved is not None:
            self._head_keys[layer][head], self._head_positions[layer][head] = moved
