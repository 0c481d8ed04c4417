"""How multiple-choice questions are written and answered: one format for eval, training and the session.

* :func:`format_question` lays the options out as lettered lines;
* a ``word-letter`` answer is the free-form answer, then its letter: ``"red (B)"``
  (:func:`word_letter`), read by :func:`decode_to_opener` up to the letter.

Nothing here needs torch at import time, so data tools can use it without loading the runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hermes_policy.errors import SessionError

if TYPE_CHECKING:
    import torch

OPTION_LETTERS = "ABCDEFGHIJ"


def format_question(question: str, options: Sequence[str] | None) -> str:
    """The question text; options become lettered lines with an instruction to answer by letter."""
    if options is None:
        return question
    if not 2 <= len(options) <= len(OPTION_LETTERS):
        raise SessionError(f"a multiple-choice question needs 2 to {len(OPTION_LETTERS)} options, got {len(options)}")
    lines = [f"{OPTION_LETTERS[i]}. {opt}" for i, opt in enumerate(options)]
    return "\n".join([question, *lines, "Answer with the option's letter."])


#: how a model answers multiple choice: the letter alone, or the free-form answer and then the letter
MC_ANSWERS = ("letter", "word-letter")
#: what comes between the word and the letter in a ``word-letter`` answer: "red (B)"
LETTER_OPENER = " ("


def word_letter(word: str, letter: str) -> str:
    """A ``word-letter`` answer: ``word_letter("red", "B") == "red (B)"``."""
    return f"{word}{LETTER_OPENER}{letter})"


@dataclass
class WordLetter:
    """A ``word-letter`` answer read up to its letter (:meth:`StreamingSession.letter_after_word`).

    Attributes:
        prompt: the templated question the answer follows.
        ids: the answer's tokens so far, opener included.
        written: their text ("red (").
        logits: (vocab,) float32 logits of the letter token.
        ttft_ms: question arrival to the first answer token.
    """

    prompt: str
    ids: list[int]
    written: str
    logits: torch.Tensor
    ttft_ms: float

    @property
    def word(self) -> str:
        """The free-form answer: what was written before the opener."""
        return self.written.rsplit(LETTER_OPENER, 1)[0].strip()


def decode_to_opener(
    logits: torch.Tensor, feed: Callable[[list[int]], torch.Tensor], tokenizer, opener: str = LETTER_OPENER,
    stop_ids: Collection[int] = (), limit: int = 8,
) -> tuple[list[int], torch.Tensor]:
    """Greedy decoding of a ``word-letter`` answer up to its letter: "red (" of "red (B)".

    Args:
        logits: (vocab,) logits of the first answer token.
        feed: appends token ids to the context and returns the (vocab,) logits after them.
        opener: the text after which the letter comes.
        stop_ids: tokens that end an answer; one (or ``limit`` tokens without the opener) gets the opener
            appended instead, as answer extraction does ("the answer is ("), so a letter is always read.

    Returns:
        the ids in context (the model's, then any appended), and the (vocab,) logits of the letter token.
    """
    generated: list[int] = []
    while not tokenizer.decode(generated).endswith(opener):
        token = int(logits.argmax())
        if token in stop_ids or len(generated) >= limit:
            forced = list(tokenizer(opener, add_special_tokens=False).input_ids)
            return generated + forced, feed(forced)
        generated.append(token)
        logits = feed([token])
    return generated, logits
