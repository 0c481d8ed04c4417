"""The compact per-layer KV cache.

:class:`CompactCache` is a transformers ``DynamicCache`` (so any HF decoder
can append to it unchanged) that also remembers, per layer, the position and
the :class:`~hermes_policy.tokens.TokenMeta` of every cached row. Layers may
hold different tokens and different counts; the registered attention function
(:mod:`hermes_policy.attention`) masks right-aligned so that stays correct.

Writes go through a small transaction so a failure never leaves a half-updated cache:

* :meth:`begin` stages the positions/metadata of the tokens about to be appended;
  the model's forward then appends their keys/values layer by layer;
* :meth:`commit` makes the staged rows permanent in every layer;
* :meth:`rollback` (also run by :meth:`transaction` on any exception, and by
  :meth:`scratch` always) cuts every layer back to where :meth:`begin` found it.

**Hybrid models** (Qwen3.5: Gated DeltaNet linear attention in most layers, full
attention in every fourth) give ``layer_types``. Only the full-attention layers hold
keys and values, so only they are *cache layers*: every method here that takes a
``layer`` counts those alone (cache layer ``l`` is model layer ``kv_layers[l]``), which
is what policies, probes and the study see. The linear layers' fixed-size conv and
recurrent state is carried exactly as the model leaves it, and is snapshotted by
:meth:`begin` so that a rollback restores it byte for byte: a question asked, answered
and rolled back leaves the recurrent state as it found it.

**Per-layer tails** (:attr:`CompactCache.layer_tails`, which HERMES's release behaviour turns on): by
default a forward's new rows get the positions the caller stages in every layer, the stream's own
positions, so a layer whose newest rows were evicted keeps a gap before them. With tails on, each
layer places new rows one past its own last row instead, as the HERMES release does: layer ``l``'s
rows are the staged positions shifted by ``shift_l = (its largest position + 1) - (the smallest staged
position)`` (never positive). The model still computes RoPE at the staged positions, so the cache
rotates the incoming keys by ``shift_l`` in :meth:`CompactCache.update`, and the registered attention
function rotates the queries by the same amount (:meth:`CompactCache.layer_shift`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer, LinearAttentionCacheLayerMixin, LinearAttentionLayer

from hermes_policy.rope import RotarySpec, dense_positions
from hermes_policy.tokens import TokenMeta

#: ``layer_types`` entry of a layer with a recurrent state instead of a KV cache
LINEAR_ATTENTION = "linear_attention"
_STATE_FIELDS = ("conv_states", "recurrent_states", "is_conv_states_initialized", "is_recurrent_states_initialized",
                 "has_previous_state", "conv_kernel_size", "device", "dtype")


@dataclass
class _Staged:
    positions: torch.Tensor  # (A, n)
    meta: TokenMeta  # n rows
    lengths: list[int]  # per-layer committed length when staging began
    recurrent: dict[int, dict] | None = None  # model layer -> its linear-attention state when staging began
    shifts: list[int] | None = None  # per cache layer, its tail shift (None: every layer at the staged positions)
    #: (shift, rows, device) -> the (cos, sin) of that tail shift, made once per write for every layer that has it
    rotations: dict = field(default_factory=dict)


def _snapshot(layer: LinearAttentionCacheLayerMixin) -> dict:
    """A copy of a linear-attention layer's state that later forwards cannot touch (they update in place)."""
    copy = {}
    for name in _STATE_FIELDS:
        value = getattr(layer, name)
        if isinstance(value, dict):
            value = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in value.items()}
        copy[name] = value
    return copy


def _restore(layer: LinearAttentionCacheLayerMixin, snapshot: dict) -> None:
    for name, value in snapshot.items():
        setattr(layer, name, dict(value) if isinstance(value, dict) else value)


class CompactCache(DynamicCache):
    """Per-layer keys, values, positions and token metadata.

    Every KV head of a layer holds the same rows; :class:`~hermes_policy.head_cache.HeadCache` is the
    per-head layout.

    Args:
        num_layers: cache layers: the model's decoder layers that hold keys and values.
        rotary: how positions map to key rotations (re-indexing needs it).
        layer_types: a hybrid model's per-decoder-layer types (``"full_attention"`` /
            ``"linear_attention"``); None: every layer is an attention layer.

    Shapes: layer ``l`` holds keys/values of shape (1, Hkv, S_l, D), positions
    (A, S_l) long with A = ``rotary.n_axes``, and ``S_l`` metadata rows.
    """

    #: what one set of kept rows belongs to: a layer here, a (layer, KV head) in a HeadCache
    granularity = "layer"

    def __init__(self, num_layers: int, rotary: RotarySpec, layer_types: list[str] | None = None) -> None:
        if layer_types is not None and LINEAR_ATTENTION in layer_types:
            kv_layers = tuple(i for i, t in enumerate(layer_types) if t != LINEAR_ATTENTION)
            if len(kv_layers) != num_layers:
                raise ValueError(f"{num_layers} cache layers, but layer_types has {len(kv_layers)} with attention")
            # made up front: transformers' lazy layers would all be plain KV layers
            Cache.__init__(self, layers=[LinearAttentionLayer() if t == LINEAR_ATTENTION else DynamicLayer()
                                         for t in layer_types])
        else:
            super().__init__()
            kv_layers = tuple(range(num_layers))
        #: model layer index of each cache layer
        self.kv_layers = kv_layers
        self._model_to_kv = {m: i for i, m in enumerate(kv_layers)}
        #: model layers with a recurrent state instead of keys and values
        self.recurrent_layers = tuple(i for i, layer in enumerate(self.layers)
                                      if isinstance(layer, LinearAttentionCacheLayerMixin))
        self.num_layers = num_layers
        self.rotary = rotary
        self._positions = [torch.empty(rotary.n_axes, 0, dtype=torch.long) for _ in range(num_layers)]
        self._meta = [TokenMeta.empty() for _ in range(num_layers)]
        self._staged: _Staged | None = None
        #: free-form per-cache state a policy keeps between chunks (e.g. summary-slot counts)
        self.policy_state: dict = {}
        #: place each layer's new rows one past its own last row (see the module docstring); a policy sets it
        self.layer_tails = False
        #: bumped by every edit of committed rows (eviction, rebuilt or rewritten rows, re-index): whether a
        #: policy step changed the cache is ``version != version before``
        self.version = 0

    # ------------------------------------------------------------------ reading
    def kv_layer(self, layer: int) -> DynamicLayer:
        """The transformers layer object holding cache layer ``layer``'s keys and values."""
        return self.layers[self.kv_layers[layer]]

    def cache_layer(self, model_layer: int) -> int | None:
        """The cache layer of a model decoder layer (its attention's ``layer_idx``); None for a linear one."""
        return self._model_to_kv.get(model_layer)

    def layer_len(self, layer: int) -> int:
        """Committed rows in ``layer`` (staged rows not counted)."""
        return self._positions[layer].shape[1]

    def positions(self, layer: int) -> torch.Tensor:
        """(A, S_l) positions of the committed rows of ``layer``."""
        return self._positions[layer]

    def meta(self, layer: int) -> TokenMeta:
        return self._meta[layer]

    def keys(self, layer: int) -> torch.Tensor:
        """(1, Hkv, S_l, D) committed keys (after RoPE)."""
        return self.kv_layer(layer).keys[..., : self.layer_len(layer), :]

    def values(self, layer: int) -> torch.Tensor:
        return self.kv_layer(layer).values[..., : self.layer_len(layer), :]

    def key_positions(self, layer: int) -> torch.Tensor:
        """(A, S) positions of every key the layer's attention sees now, staged rows included."""
        if self._staged is None:
            return self._positions[layer]
        return torch.cat([self._positions[layer], self.staged_positions(layer)], dim=1)

    def layer_shift(self, layer: int) -> int:
        """How far the staged rows of cache layer ``layer`` sit from the staged positions (0 without tails)."""
        staged = self._staged
        return 0 if staged is None or staged.shifts is None else staged.shifts[layer]

    def staged_positions(self, layer: int) -> torch.Tensor:
        """(A, n) positions the staged rows take in cache layer ``layer``."""
        staged = self._require_staged()
        shift = self.layer_shift(layer)
        return staged.positions + shift if shift else staged.positions

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """transformers' append of a layer's new keys and values; with tails, the keys move to the layer's own
        positions first (they arrive rotated to the staged positions)."""
        layer = self._model_to_kv.get(layer_idx)
        shift = self.layer_shift(layer) if layer is not None else 0
        if shift:
            key_states = self.shift_rotate(key_states, shift)
        return super().update(key_states, value_states, layer_idx, *args, **kwargs)

    def shift_rotate(self, x: torch.Tensor, shift: int) -> torch.Tensor:
        """(..., n, D) ``x`` rotated ``shift`` positions on every axis (``rotary.rotate`` by a constant delta). Layers
        with the same tail shift share one cos/sin per staged write (keys at :meth:`update`, queries in attention)."""
        n = x.shape[-2]
        memo = self._staged.rotations if self._staged is not None else {}
        if (shift, n, x.device) not in memo:
            memo[shift, n, x.device] = self.rotary.cos_sin(torch.full((self.rotary.n_axes, n), shift, device=x.device))
        cos, sin = memo[shift, n, x.device]
        return RotarySpec.apply(x, cos, sin)

    def key_meta(self, layer: int) -> TokenMeta:
        """Metadata of every key the layer's attention sees now, staged rows included."""
        if self._staged is None:
            return self._meta[layer]
        return TokenMeta.cat([self._meta[layer], self._staged.meta])

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Rows model layer ``layer_idx`` attends to now: committed, plus any a staged forward has appended.

        Overrides transformers' version, which reads layer 0 only. This is a count of
        rows, not a position: after eviction layers hold different counts and positions
        keep their gaps, so it must never be used to place new tokens. The session
        always passes explicit ``position_ids`` for that reason; see :attr:`next_position`.
        Transformers calls it with a *model* layer index; a linear-attention layer holds no rows.
        """
        n_model = len(self.kv_layers) + len(self.recurrent_layers)
        if not 0 <= layer_idx < n_model:
            raise IndexError(f"layer {layer_idx} is out of range for a cache of {n_model} layers")
        if layer_idx >= len(self.layers) or layer_idx in self.recurrent_layers or \
                not self.layers[layer_idx].is_initialized:
            return 0
        return self.layers[layer_idx].keys.shape[-2]

    def video_count(self, layer: int) -> int:
        return int(self._meta[layer].is_video.sum())

    @property
    def next_position(self) -> int:
        """One past the largest position held by any layer (0 when empty)."""
        tops = [int(p.max()) + 1 for p in self._positions if p.numel()]
        return max(tops, default=0)

    def _kv_objects(self) -> list[DynamicLayer]:
        return [self.layers[m] for m in self.kv_layers if m < len(self.layers) and self.layers[m].is_initialized]

    @property
    def kv_bytes(self) -> int:
        """Bytes of key and value storage actually held (what the budget is about)."""
        total = 0
        for layer in self._kv_objects():
            total += layer.keys.untyped_storage().nbytes() + layer.values.untyped_storage().nbytes()
        return total

    @property
    def recurrent_bytes(self) -> int:
        """Bytes of the linear-attention layers' conv and recurrent state: fixed, whatever the stream's length."""
        total = 0
        for m in self.recurrent_layers:
            layer = self.layers[m]
            for states in (layer.conv_states, layer.recurrent_states):
                total += sum(t.untyped_storage().nbytes() for t in states.values() if isinstance(t, torch.Tensor))
        return total

    @property
    def kv_bytes_by_device(self) -> dict[str, int]:
        """:attr:`kv_bytes` per device: each layer's keys and values live on that layer's device."""
        totals: dict[str, int] = {}
        for layer in self._kv_objects():
            device = str(layer.keys.device)
            totals[device] = (totals.get(device, 0) + layer.keys.untyped_storage().nbytes()
                              + layer.values.untyped_storage().nbytes())
        return totals

    @property
    def nbytes(self) -> int:
        """All bytes held: keys, values, positions, token metadata and any recurrent state."""
        side = sum(p.untyped_storage().nbytes() + m.nbytes for p, m in zip(self._positions, self._meta))
        return self.kv_bytes + side + self.recurrent_bytes

    @property
    def is_empty(self) -> bool:
        """Nothing written yet: no rows in any layer and no recurrent state."""
        if any(self.layer_len(i) for i in range(self.num_layers)):
            return False
        return not any(any(self.layers[m].is_recurrent_states_initialized.values()) or
                       any(self.layers[m].is_conv_states_initialized.values()) for m in self.recurrent_layers)

    def lengths(self) -> list[int]:
        return [self.layer_len(i) for i in range(self.num_layers)]

    def to_dynamic(self) -> DynamicCache:
        """A plain transformers ``DynamicCache`` holding copies of the committed keys and values (and a hybrid's
        recurrent state): what a stock model would attend to, for oracles that run without this cache."""
        plain = self.recurrent_copy()
        for i, m in enumerate(self.kv_layers):
            plain.update(*self._dense_kv(i), m)
        return plain

    def recurrent_copy(self) -> DynamicCache:
        """A plain ``DynamicCache`` holding a copy of a hybrid's recurrent state and no keys or values yet."""
        plain = DynamicCache()
        if self.recurrent_layers:
            Cache.__init__(plain, layers=[LinearAttentionLayer() if m in self.recurrent_layers else DynamicLayer()
                                          for m in range(len(self.layers))])
            for m in self.recurrent_layers:
                _restore(plain.layers[m], _snapshot(self.layers[m]))
        return plain

    def _dense_kv(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of the layer's committed (1, Hkv, S, D) keys and values."""
        return self.keys(layer).clone(), self.values(layer).clone()

    # ------------------------------------------------------------ transactions
    def begin(self, positions: torch.Tensor, meta: TokenMeta) -> None:
        """Stage ``n`` rows about to be appended by one forward.

        Args:
            positions: (A, n) positions of the new tokens.
            meta: their metadata (n rows).
        """
        if self._staged is not None:
            raise RuntimeError("CompactCache.begin called while another write is staged")
        if positions.shape != (self.rotary.n_axes, len(meta)):
            raise ValueError(f"positions must be ({self.rotary.n_axes}, {len(meta)}), got {tuple(positions.shape)}")
        recurrent = {m: _snapshot(self.layers[m]) for m in self.recurrent_layers} if self.recurrent_layers else None
        positions = positions.to(torch.long).cpu()
        self._staged = _Staged(positions, meta, self.lengths(), recurrent, self._tail_shifts(positions))

    def _tail_shifts(self, positions: torch.Tensor) -> list[int] | None:
        """Per layer, how far to move rows staged at ``positions`` so they start one past the layer's last row."""
        if not self.layer_tails or positions.numel() == 0:
            return None
        start = int(positions.min())
        shifts = [min(0, int(p.max()) + 1 - start) if p.numel() else 0 for p in self._positions]
        return shifts if any(shifts) else None

    def commit(self) -> None:
        """Make the staged rows permanent in every layer."""
        staged = self._require_staged()
        n = len(staged.meta)
        for i in range(self.num_layers):
            m = self.kv_layers[i]
            got = self.layers[m].get_seq_length() if m < len(self.layers) else 0
            if got != staged.lengths[i] + n:
                raise RuntimeError(f"layer {i} holds {got} rows, expected {staged.lengths[i] + n} after the forward")
            self._positions[i] = torch.cat([self._positions[i], self.staged_positions(i)], dim=1)
            self._meta[i] = TokenMeta.cat([self._meta[i], staged.meta])
        self._staged = None

    def rollback(self) -> None:
        """Cut every layer back to its length at :meth:`begin`, freeing the appended rows."""
        staged = self._require_staged()
        for i, n in enumerate(staged.lengths):
            m = self.kv_layers[i]
            if m < len(self.layers) and self.layers[m].is_initialized and self.layers[m].get_seq_length() > n:
                # clone() so the storage that held the discarded rows is really released
                self.layers[m].keys = self.layers[m].keys[..., :n, :].clone()
                self.layers[m].values = self.layers[m].values[..., :n, :].clone()
        for m, snapshot in (staged.recurrent or {}).items():
            _restore(self.layers[m], snapshot)
        self._staged = None

    @contextmanager
    def transaction(self, positions: torch.Tensor, meta: TokenMeta) -> Iterator[None]:
        """Stage, run the body (a forward), commit; roll back if the body raises."""
        self.begin(positions, meta)
        try:
            yield
        except BaseException:
            self.rollback()
            raise
        self.commit()

    @contextmanager
    def scratch(self, positions: torch.Tensor, meta: TokenMeta, payload=None) -> Iterator:
        """Stage rows that are never kept (a question, a pseudo-query): always roll back.

        Yields ``payload`` (e.g. the chunk whose rows these are), for ``with ... as chunk``.
        """
        self.begin(positions, meta)
        try:
            yield payload
        finally:
            self.rollback()

    def extend_scratch(self, positions: torch.Tensor, meta: TokenMeta) -> None:
        """Add rows to the current scratch write (one decode step after the prefill)."""
        staged = self._require_staged()
        staged.positions = torch.cat([staged.positions, positions.to(torch.long).cpu()], dim=1)
        staged.meta = TokenMeta.cat([staged.meta, meta])

    def _require_staged(self) -> _Staged:
        if self._staged is None:
            raise RuntimeError("no write is staged on this CompactCache")
        return self._staged

    # ----------------------------------------------------------------- editing
    def evict(self, layer: int, keep: torch.Tensor) -> None:
        """Keep only rows ``keep`` of ``layer``, in the given order; the rest is freed.

        Args:
            keep: (K,) long indices into the layer's committed rows, usually ascending.
        """
        if self._staged is not None:
            raise RuntimeError("cannot evict while a write is staged")
        keep = keep.to(torch.long).cpu()
        n = self.layer_len(layer)
        if keep.numel() and (int(keep.min()) < 0 or int(keep.max()) >= n):
            raise IndexError(f"keep indices out of range for layer {layer} with {n} rows")
        if keep.numel() == n and torch.equal(keep, torch.arange(n)):
            return
        kv = self.kv_layer(layer)
        device_keep = keep.to(kv.keys.device)
        # index_select allocates fresh compact storage; the old tensors are dropped
        kv.keys = kv.keys.index_select(-2, device_keep)
        kv.values = kv.values.index_select(-2, device_keep)
        self._positions[layer] = self._positions[layer].index_select(1, keep)
        self._meta[layer] = self._meta[layer].select(keep)
        self.version += 1

    def crop(self, tokens_to_remove: int) -> None:
        """Drop the newest ``-tokens_to_remove`` committed rows of every layer (transformers' convention).

        Overrides transformers' version, which would cut keys and values but leave this
        cache's positions and metadata behind. Rows are removed through :meth:`evict`, so
        all three stay in step. A policy's row-aligned state cannot be cropped on its
        behalf, so a cache that holds some refuses.

        Raises:
            ValueError: a positive or non-integer count, a layer holding fewer rows, or policy state present.
            RuntimeError: a write is staged.
        """
        if isinstance(tokens_to_remove, bool) or not isinstance(tokens_to_remove, int) or tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative number of rows to remove, got {tokens_to_remove!r}")
        if self._staged is not None:
            raise RuntimeError("cannot crop while a write is staged")
        n = -tokens_to_remove
        if n == 0:
            return
        if self.policy_state:
            raise ValueError(f"cannot crop a cache that holds policy state ({', '.join(map(str, self.policy_state))}): "
                             "the policy's per-row state would fall out of step with the rows")
        short = [i for i in range(self.num_layers) if self.layer_len(i) < n]
        if short:
            raise ValueError(f"cannot remove {n} rows: layer(s) {short} hold fewer")
        for layer in range(self.num_layers):
            self.evict(layer, torch.arange(self.layer_len(layer) - n))

    def replace_row(self, layer: int, row: int, key: torch.Tensor, value: torch.Tensor) -> None:
        """Overwrite one committed row's key/value in place (e.g. a summary slot).

        Args:
            key, value: (1, Hkv, D) tensors.
        """
        kv = self.kv_layer(layer)
        kv.keys[..., row, :] = key.to(kv.keys.dtype)
        kv.values[..., row, :] = value.to(kv.values.dtype)
        self.version += 1

    def replace_layer(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor, meta: TokenMeta
    ) -> None:
        """Replace everything ``layer`` holds (the cache has no insert; rebuilding stands in for it).

        Args:
            keys, values: (1, Hkv, S, D); positions: (A, S); meta: S rows.
        """
        if self._staged is not None:
            raise RuntimeError("cannot rebuild a layer while a write is staged")
        n = keys.shape[-2]
        if values.shape != keys.shape or positions.shape != (self.rotary.n_axes, n) or len(meta) != n:
            raise ValueError(
                f"layer parts disagree: keys {tuple(keys.shape)}, values {tuple(values.shape)}, "
                f"positions {tuple(positions.shape)}, {len(meta)} meta rows"
            )
        kv = self.kv_layer(layer)
        kv.keys, kv.values = keys, values
        self._positions[layer] = positions.to(torch.long).cpu()
        self._meta[layer] = meta
        self.version += 1

    def set_row_meta(self, layer: int, row: int, *, frame: int, patch: int, time: float) -> None:
        """Relabel one committed row (e.g. a row repurposed as a summary slot)."""
        meta = self._meta[layer]
        meta.frame[row], meta.patch[row], meta.time[row] = frame, patch, time

    def reindex(self, layer: int, new_positions: torch.Tensor | None = None) -> None:
        """Move the layer's rows to new positions and rotate their keys to match.

        Args:
            new_positions: (A, S_l) target positions; default: dense ranks of the current ones.
        """
        kv = self.kv_layer(layer) if self.layer_len(layer) else None
        moved = self._moved(self._positions[layer], kv.keys if kv is not None else None, new_positions)
        if moved is not None:
            kv.keys, self._positions[layer] = moved

    def _moved(self, old: torch.Tensor, keys: torch.Tensor | None, new_positions: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Keys at (A, S) positions ``old`` rotated to ``new_positions`` (default: the dense ranks of ``old``), and
        the new positions; None when nothing moves. Shared by the per-layer and the per-head re-index."""
        if self._staged is not None:
            raise RuntimeError("cannot re-index while a write is staged")
        new = dense_positions(old) if new_positions is None else new_positions.to(torch.long).cpu()
        if new.shape != old.shape:
            raise ValueError(f"new positions must have shape {tuple(old.shape)}")
        delta = new - old
        if old.numel() == 0 or not bool(delta.any()):
            return None
        self.version += 1
        return self.rotary.rotate(keys, delta.to(keys.device)), new

    def reindex_all(self) -> None:
        """Dense re-index of every layer (eager re-indexing calls this after each prune)."""
        for i in range(self.num_layers):
            self.reindex(i)
