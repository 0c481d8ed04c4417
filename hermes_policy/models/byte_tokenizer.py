"""A self-contained byte-level chat tokenizer for tiny random-init test models.

Real chat tokenizers (SmolLM2, Qwen2) are byte-level BPE vocabularies with
ChatML special tokens. Tests that drive small random models need something
that behaves the same way -- special tokens that are never split, a chat
template, ``eos``/``pad`` ids, ``save_pretrained``/``from_pretrained`` -- but
must not download anything. :func:`byte_tokenizer` builds one from scratch with
the ``tokenizers`` library: a BPE model whose vocabulary is exactly the 256
byte-level symbols and which has *no merges*, so every UTF-8 byte of the input
becomes one token. Any text round-trips losslessly, and the vocabulary stays
tiny (256 + specials), which keeps the embedding tables of test models small.

Token ids are laid out so that they are easy to read in a debugger:

* ``0..255``  -- the raw bytes; the id of a byte *is* its value
  (``"A"`` -> ``65``, ``"é"`` -> ``[195, 169]``);
* ``256..``   -- ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``, then the
  extra special tokens in the order given.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # transformers is heavy to import; only type checkers need it here
    from transformers import PreTrainedTokenizerFast

__all__ = [
    "BYTE_VOCAB_SIZE",
    "CHATML_TEMPLATE",
    "DEFAULT_SPECIAL_TOKENS",
    "ENDOFTEXT",
    "IM_END",
    "IM_START",
    "bpe_tokenizer",
    "byte_tokenizer",
]

#: Ends a document; used as the padding token (as in Qwen2), so that padding is
#: never confused with the end of an assistant turn.
ENDOFTEXT = "<|endoftext|>"
#: Opens a ChatML turn (followed by the role and a newline).
IM_START = "<|im_start|>"
#: Closes a ChatML turn; the end-of-sequence token for chat generation.
IM_END = "<|im_end|>"

#: The special tokens every byte tokenizer has, in id order (ids 256, 257, 258).
DEFAULT_SPECIAL_TOKENS: tuple[str, ...] = (ENDOFTEXT, IM_START, IM_END)

#: Number of ordinary (byte) tokens; special tokens start at this id.
BYTE_VOCAB_SIZE = 256

#: ChatML, as used by SmolLM2 and Qwen2, minus their default system prompts (a
#: test tokenizer should render exactly the messages it is given). ``content``
#: may be a string or a list of ``{"type": "text", "text": ...}`` parts, the
#: shape multimodal chat messages use; other part types are rejected rather than
#: silently dropped, because a test relying on them would pass for the wrong
#: reason.
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}"
    "{{- part['text'] -}}"
    "{%- else -%}"
    "{{- raise_exception('byte_tokenizer chat template only renders text parts, got ' + part['type']) -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)


def byte_tokenizer(special_tokens: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """Build a byte-level ChatML tokenizer that needs no download.

    Args:
        special_tokens: Extra special tokens to add after the defaults
            (``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``), e.g.
            ``["<|vision_start|>", "<|vision_end|>"]``. They are never split,
            are dropped by ``decode(..., skip_special_tokens=True)``, and get
            consecutive ids in the order given. Duplicates, including repeats
            of the defaults, are ignored.

    Returns:
        A fast tokenizer with ``len(tokenizer) == 256 + number of special
        tokens``, ``eos_token == "<|im_end|>"``, ``pad_token ==
        "<|endoftext|>"``, no BOS token (nothing is added when encoding), and a
        ChatML chat template supporting ``add_generation_prompt``. For any
        string ``s``, ``decode(encode(s)) == s``.

    Raises:
        ValueError: If a special token is empty.
    """
    # Imported here so that importing this module stays cheap.
    from tokenizers import Tokenizer, models, pre_tokenizers

    extras: list[str] = []
    for token in special_tokens:
        if not token:
            raise ValueError("special tokens must be non-empty strings")
        if token not in DEFAULT_SPECIAL_TOKENS and token not in extras:
            extras.append(token)

    # ByteLevel maps every byte to a printable unicode symbol (GPT-2's table);
    # ordering the vocabulary by byte value makes the id of a byte its value.
    byte_to_symbol = _bytes_to_unicode()
    vocab = {byte_to_symbol[b]: b for b in range(BYTE_VOCAB_SIZE)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    # With no merges the regex pre-split would not change the output, so skip
    # it; add_prefix_space=False keeps encoding a pure function of the bytes,
    # which is what makes decode(encode(s)) == s hold exactly.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    return _chat_wrap(tokenizer, extras)


def bpe_tokenizer(corpus: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE ChatML tokenizer on ``corpus`` (deterministic for a given corpus).

    Every byte stays in the vocabulary, so any text still round-trips; the merges
    only make text like the corpus short. The embedded model trained from
    scratch uses one with ~1k entries: its prompts are a few dozen tokens
    instead of a few hundred bytes.

    Raises:
        ValueError: if ``vocab_size`` cannot hold the 256 bytes and the specials.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    if vocab_size < BYTE_VOCAB_SIZE + len(DEFAULT_SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be >= {BYTE_VOCAB_SIZE + len(DEFAULT_SPECIAL_TOKENS)}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(DEFAULT_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return _chat_wrap(tokenizer, [])


def _chat_wrap(tokenizer, extras: list[str]) -> PreTrainedTokenizerFast:
    """ChatML specials, byte-level decoding and the transformers wrapper around a ``tokenizers`` BPE."""
    from tokenizers import AddedToken, decoders, processors
    from transformers import PreTrainedTokenizerFast

    tokenizer.decoder = decoders.ByteLevel()
    # trim_offsets=False: offsets then cover exactly the bytes of each token.
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    # normalized=False: specials match the raw text, as in SmolLM2/Qwen2.
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in (*DEFAULT_SPECIAL_TOKENS, *extras)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        # Listed as in Qwen2's tokenizer_config, so that ``all_special_tokens``
        # names every ChatML marker (the ``tokenizers`` object already treats
        # them as special; this is the transformers-side bookkeeping).
        extra_special_tokens=[IM_START, IM_END, *extras],
        chat_template=CHATML_TEMPLATE,
        padding_side="right",
        clean_up_tokenization_spaces=False,  # would rewrite " ." -> "." and break round-trips
    )


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-character table, as ByteLevel uses it.

    ``tokenizers`` exposes the alphabet only as an unordered set
    (``ByteLevel.alphabet()``), so the byte order is recomputed here; the
    result is checked against that set in the tests.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codepoints = printable[:]
    shift = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codepoints.append(256 + shift)
            shift += 1
    return {b: chr(c) for b, c in zip(printable, codepoints, strict=True)}
