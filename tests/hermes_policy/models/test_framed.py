"""InternVL3.5 and SmolVLM2 against the stock transformers models fed token ids and pixels.

The stock model gets the stream as its processor writes a video (per frame: InternVL's ``Frame{n}: <img>``
+ ``<IMG_CONTEXT>`` x 256 + ``</img>`` joined by newlines; SmolVLM's ``\\nFrame from MM:SS:`` + the global-image
tokens), the frames' pixels, and computes the vision features, the pixel shuffle, the projection and the
1-D positions itself. Streaming the same frames chunk by chunk through the compact cache must agree.
"""

from __future__ import annotations

import pytest
import torch
from conftest import _tiny, close

from hermes_policy import SessionConfig, StreamingSession
from hermes_policy.mc_format import format_question

QUESTION = "What is happening?"
PLACEHOLDER = {"tiny-internvl": "<IMG_CONTEXT>", "tiny-smolvlm": "<image>"}


def stock_prompt(adapter, session, frames, question):
    tok = adapter.tokenizer

    def ids(text: str) -> list[int]:
        return tok(text, add_special_tokens=False).input_ids

    pad = tok.convert_tokens_to_ids(PLACEHOLDER[adapter.name])
    seq = ids(session.template.prefix)
    for frame in frames:
        before, after = adapter.frame_text(frame)
        seq += ids(before) + [pad] * adapter.patches_per_frame() + ids(after)
    seq += ids(session.template.question_text(format_question(question, None)))
    pixels = adapter.pixel_values(frames)
    if adapter.name == "tiny-smolvlm":
        pixels = pixels[None]  # (batch, images, 3, S, S)
    return {"input_ids": torch.tensor([seq]), "pixel_values": pixels}


@pytest.mark.parametrize("name", ["tiny-internvl", "tiny-smolvlm"])
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_streaming_equals_the_stock_model_fed_ids_and_pixels(name, implementation, frames):
    adapter = _tiny(name)
    session = StreamingSession(adapter, config=SessionConfig(chunk_frames=4))
    session.ingest(frames)  # 12 frames: numbers and times of one and two digits
    streamed = session.question_logits(QUESTION)
    adapter.set_attention(implementation)
    try:
        with torch.no_grad():
            reference = adapter.model(**stock_prompt(adapter, session, frames, QUESTION), use_cache=False)
    finally:
        adapter.set_attention("hermes")
    reference = reference.logits[0, -1].float()
    assert close(streamed, reference, atol=1e-4), (streamed - reference).abs().max()


@pytest.mark.parametrize("name", ["tiny-internvl", "tiny-smolvlm"])
def test_frame_text_is_written_as_the_processor_writes_it(name, frames):
    adapter = _tiny(name)
    first, tenth = adapter.frame_text(frames[0]), adapter.frame_text(frames[9])
    if name == "tiny-internvl":
        assert first == ("Frame1: <img>", "</img>") and tenth == ("\nFrame10: <img>", "</img>")
    else:
        assert first == ("\nFrame from 00:00:<fake_token_around_image><global-img>", "<fake_token_around_image>")
        assert tenth[0].startswith(f"\nFrame from 00:{int(frames[9].time):02d}:")
    chunk = adapter.encode_frames(frames[:2], 0)
    patches = chunk.meta.patch >= 0
    assert int(patches.sum()) == 2 * adapter.patches_per_frame() == 8
    assert set(chunk.meta.frame.tolist()) == {frames[0].index, frames[1].index}
    assert chunk.positions[0].tolist() == list(range(len(chunk)))
