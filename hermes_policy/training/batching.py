"""Samples to model inputs: packed streams in the streaming session's prompt layout (:class:`Batcher`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hermes_policy.models.base import DEFAULT_SYSTEM_PROMPT, PromptTemplate
from hermes_policy.training.samples import Sample


@dataclass
class Batch:
    """A padded batch. Shapes: embeds (B, L, hidden); mask (B, 1, L, L) bool, True where a query row
    may attend to a key column; positions (B, L); labels (B, L), -100 off-target.
    ``spans[i][j]`` is the (start, stop) of sample i's branch j (question and target tokens)."""

    embeds: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    labels: torch.Tensor
    spans: list[list[tuple[int, int]]]

    def model_inputs(self, end: int | None = None) -> dict:
        """Keyword arguments for the LM, optionally cut to the first ``end`` tokens."""
        end = self.embeds.shape[1] if end is None else end
        return {"inputs_embeds": self.embeds[:, :end], "attention_mask": self.mask[:, :, :end, :end],
                "position_ids": self.positions[:, :end]}


class Batcher:
    """Turns samples into padded ``inputs_embeds`` + labels in the streaming prompt layout."""

    def __init__(self, model, tokenizer, frontend: torch.nn.Module) -> None:
        self.model, self.tokenizer, self.frontend = model, tokenizer, frontend
        self.template = PromptTemplate.from_tokenizer(tokenizer, DEFAULT_SYSTEM_PROMPT)
        self.embed = model.get_input_embeddings()
        self.prefix_ids = self._ids(self.template.prefix)
        self.end_ids = self._ids("<|im_end|>")

    def _ids(self, text: str) -> torch.Tensor:
        return self.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0]

    def __call__(self, samples: list[Sample]) -> Batch:
        n_frames = [len(s.frames) for s in samples]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            visual = self.frontend(np.concatenate([np.stack(s.frames) for s in samples]))
        visual = visual.to(self.embed.weight.dtype).split(n_frames)
        rows = [self._row(sample, vis) for sample, vis in zip(samples, visual)]
        length = max(r[0].shape[0] for r in rows)
        batch = Batch(embeds=torch.zeros(len(rows), length, rows[0][0].shape[1], dtype=rows[0][0].dtype),
                      mask=torch.eye(length, dtype=torch.bool).repeat(len(rows), 1, 1, 1),  # pads see themselves
                      positions=torch.zeros(len(rows), length, dtype=torch.long),
                      labels=torch.full((len(rows), length), -100), spans=[r[4] for r in rows])
        for i, (embeds, mask, positions, labels, _) in enumerate(rows):
            n = embeds.shape[0]
            batch.embeds[i, :n], batch.mask[i, 0, :n, :n] = embeds, mask
            batch.positions[i, :n], batch.labels[i, :n] = positions, labels
        return batch

    def _row(self, sample: Sample, vis: torch.Tensor) -> tuple:
        """One stream: embeds (n, hidden), mask (n, n), positions (n,), labels (n,) and the branch spans.

        vis: (frames, tokens per frame, hidden)."""
        n_frames, per_frame = vis.shape[:2]
        gaps = sample.gaps or [0] * n_frames
        prefix = self.prefix_ids.numel()
        # stream part: prefix then frames, causal, positions shifted by the cumulative gaps
        frame_pos = torch.tensor([prefix + f * per_frame + sum(gaps[: f + 1]) for f in range(n_frames)])
        positions = [torch.arange(prefix), (frame_pos[:, None] + torch.arange(per_frame)).flatten()]
        pieces, labels, spans = [self.embed(self.prefix_ids), vis.flatten(0, 1)], [], []
        stream = prefix + n_frames * per_frame
        labels.append(torch.full((stream,), -100))
        start = stream
        for b in sample.branches:
            question = self._ids(self.template.question_text(b.question))
            target = torch.cat([self._ids(b.target), self.end_ids])
            ids = torch.cat([question, target])
            pieces.append(self.embed(ids))
            positions.append(frame_pos[b.frame] + per_frame + torch.arange(ids.numel()))
            label = torch.full((ids.numel(),), -100)
            label[-target.numel():] = target
            labels.append(label)
            spans.append((start, start + ids.numel(), prefix + (b.frame + 1) * per_frame))
            start += ids.numel()
        mask = torch.zeros(start, start, dtype=torch.bool)
        mask[:stream, :stream] = torch.ones(stream, stream, dtype=torch.bool).tril()
        for lo, hi, seen in spans:
            mask[lo:hi, :seen] = True
            mask[lo:hi, lo:hi] = torch.ones(hi - lo, hi - lo, dtype=torch.bool).tril()
        return torch.cat(pieces), mask, torch.cat(positions), torch.cat(labels), [(lo, hi) for lo, hi, _ in spans]


__all__ = ["Batch", "Batcher"]
