"""Tests for hermes_policy.models.byte_tokenizer (fast: no model files, no download)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hermes_policy.models.byte_tokenizer import (
    BYTE_VOCAB_SIZE,
    _bytes_to_unicode,
    byte_tokenizer,
)

TEXTS = [
    "",
    "hello world",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n",
    "héllo wörld — ça va?",
    "日本語のテキスト",
    "emoji 🤖👍🏽 and ZWJ 👩‍👩‍👧",
    "\x00\x01 control bytes \x7f",
    "a . b , c ! ' s",  # spacing around punctuation must survive (no clean-up)
]


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def test_byte_table_matches_tokenizers_alphabet() -> None:
    from tokenizers import pre_tokenizers

    table = _bytes_to_unicode()
    assert sorted(table) == list(range(256))
    assert set(table.values()) == set(pre_tokenizers.ByteLevel.alphabet())


def test_vocab_layout(tok) -> None:
    assert len(tok) == BYTE_VOCAB_SIZE + 3
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [256, 257, 258]
    assert tok.encode("A") == [65]  # a byte's id is its value
    assert tok.encode("é") == list("é".encode())


def test_special_token_roles(tok) -> None:
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 258
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == 256
    assert tok.bos_token is None
    assert {"<|im_start|>", "<|im_end|>", "<|endoftext|>"} <= set(tok.all_special_tokens)


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(tok, text: str) -> None:
    ids = tok.encode(text)
    assert ids == list(text.encode())  # one token per UTF-8 byte, nothing added
    assert tok.decode(ids) == text


def test_special_tokens_are_atomic(tok) -> None:
    text = "<|im_start|>user\nhi<|im_end|>"
    ids = tok.encode(text)
    assert ids[0] == 257 and ids[-1] == 258
    assert len(ids) == 2 + len("user\nhi")
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=True) == "user\nhi"


def test_extra_special_tokens() -> None:
    tok = byte_tokenizer(["<|vision_start|>", "<|vision_end|>", "<|im_end|>", "<|vision_start|>"])
    assert len(tok) == BYTE_VOCAB_SIZE + 5  # duplicates and defaults are not added twice
    assert tok.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>"]) == [259, 260]
    ids = tok.encode("a<|vision_start|>b<|vision_end|>")
    assert ids == [97, 259, 98, 260]
    assert tok.decode(ids, skip_special_tokens=True) == "ab"
    assert "<|vision_start|>" in tok.all_special_tokens


def test_empty_special_token_is_rejected() -> None:
    with pytest.raises(ValueError):
        byte_tokenizer([""])


def test_chat_template(tok) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
    ]
    assert tok.apply_chat_template(messages, tokenize=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
    )
    prompt = tok.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert not prompt.startswith("<|im_start|>system\nYou are")  # no default system prompt


def test_chat_template_text_parts_and_ids(tok) -> None:
    parts = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    assert tok.apply_chat_template(parts, tokenize=False) == "<|im_start|>user\nab<|im_end|>\n"
    encoded = tok.apply_chat_template(parts, add_generation_prompt=True, return_dict=True)
    generation_prompt = [257, *b"assistant\n"]  # <|im_start|> is one token, the role is bytes
    assert encoded["input_ids"][:2] == [257, ord("u")]
    assert encoded["input_ids"][-len(generation_prompt) :] == generation_prompt
    with pytest.raises(Exception, match="only renders text parts"):
        tok.apply_chat_template([{"role": "user", "content": [{"type": "image"}]}], tokenize=False)


def test_batch_padding(tok) -> None:
    batch = tok(["ab", "abcd"], padding=True, return_tensors="pt")
    assert batch["input_ids"].tolist() == [[97, 98, 256, 256], [97, 98, 99, 100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


def test_save_and_reload(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = byte_tokenizer(["<|vision_start|>"])
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = "<|im_start|>user\n日本<|vision_start|><|im_end|>"
    assert again.encode(text) == tok.encode(text)
    assert again.chat_template == tok.chat_template
    assert (again.eos_token, again.pad_token) == (tok.eos_token, tok.pad_token)
    assert len(again) == len(tok)


def test_drives_a_tiny_random_model(tok) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert out.shape[1] <= prompt["input_ids"].shape[1] + 5
    assert isinstance(tok.decode(out[0]), str)
