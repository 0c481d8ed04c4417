"""Scoring a multiple-choice question against a session's cache: one :class:`Scored` per question.

Scoring (:class:`LetterScorer`, the default): one forward of the question
(options lettered A, B, ... by :func:`~hermes_policy.session.format_question`)
against the cache, then the logits of the first answer token. Each option
letter's score is the log-sum-exp of the logits of its token spellings:

* the token the tokenizer produces for the letter written right after the
  prompt (the assistant turn's opening, e.g. ``"...assistant\\n"`` + ``"B"``):
  exactly what greedy decoding would emit first. If appending the letter
  merges across the boundary, the letter's own first token is used instead;
* the single token for ``" B"`` (leading space), when the tokenizer has one and
  no other letter claims it: SentencePiece-style models often open an answer with it.

A model trained to answer ``word-letter`` ("red (B)": the free-form answer,
then its letter; ``adapter.mc_scoring``) is scored by
:class:`WordLetterScorer`: it writes its word greedily up to the opener " ("
(appended if it ends or runs past ``max_word_tokens`` first, as answer
extraction does), and the letters are scored there, in that context, as
above; ``answer_text`` in the rows is the word. :class:`ClozeScorer` asks the
question without options and scores each option by ``log P(its tokens, then
an end token)``: the free-form answer restricted to the options, for a model
that answers in words more reliably than it matches words to letters
(``embedded`` declares it). ``--scoring`` overrides what the model declares
(``auto``, the default, follows it). A free-form count question (OVO-Bench
REC, no options) is always answered by :class:`CountScorer`, whatever the scoring.

The prediction is the option with the highest score (ties: the earliest
letter); it is correct when it equals the answer letter. ``letter_prob`` in
the rows is the softmax mass on all option-letter tokens: how much the model
follows the "answer with the letter" instruction at all.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from hermes_policy.data.questions import Question
from hermes_policy.eval.errors import EvalError
from hermes_policy.mc_format import OPTION_LETTERS, format_question
from hermes_policy.models.base import ModelAdapter
from hermes_policy.session import StreamingSession


@dataclass
class Scored:
    """One scored question.

    Attributes:
        scores: (n_options,) float score per option letter, higher = preferred.
        ttft_ms: question arrival to first-token logits.
        letter_prob: softmax mass on all option-letter tokens (None if not computed).
        top_token: the vocabulary's argmax token at the letter, decoded (None if not computed).
        answer_text: the free-form answer written before the letter (``word-letter`` scoring), else None.
    """

    scores: torch.Tensor
    ttft_ms: float
    letter_prob: float | None = None
    top_token: str | None = None
    answer_text: str | None = None


Scorer = Callable[[StreamingSession, Question], Scored]


def letter_token_ids(tokenizer, prompt: str, n_options: int) -> list[list[int]]:
    """Per option letter, the token ids that spell it as a first answer token (see the module docstring).

    Returns:
        ``n_options`` lists of ids; the first id of each list is the in-context spelling.

    Raises:
        EvalError: when two letters share an in-context token (the letters could not be told apart).
    """
    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False).input_ids)

    base = ids(prompt)
    letters = OPTION_LETTERS[:n_options]
    primary = []
    for letter in letters:
        extended = ids(prompt + letter)
        if len(extended) > len(base) and extended[: len(base)] == base:
            primary.append(extended[len(base)])
        else:  # the letter merged with the prompt's last token: fall back to its own first token
            primary.append(ids(letter)[0])
    if len(set(primary)) != len(primary):
        raise EvalError(f"the tokenizer gives option letters {letters} no distinct first tokens ({primary})")
    spaced = [ids(" " + letter) for letter in letters]
    singles = [s[0] for s in spaced if len(s) == 1]
    out = []
    for first, variant in zip(primary, spaced):
        group = [first]
        # a space variant joins only if it is one token that no other letter uses
        if len(variant) == 1 and variant[0] != first and variant[0] not in primary and singles.count(variant[0]) == 1:
            group.append(variant[0])
        out.append(group)
    return out


def _flat(groups: list[list[int]]) -> torch.Tensor:
    """Every option's letter token ids, in one tensor (option by option)."""
    return torch.tensor([i for g in groups for i in g])


def score_letters(logits: torch.Tensor, groups: list[list[int]], tokenizer, ttft_ms: float,
                   answer_text: str | None = None) -> Scored:
    """Per option, the log-sum-exp of its letter spellings' logits; logits: (vocab,) at the letter token."""
    flat = _flat(groups)
    logits = logits.cpu()
    letter_logits, scores, k = logits[flat], [], 0
    for g in groups:
        scores.append(torch.logsumexp(letter_logits[k: k + len(g)], dim=0))
        k += len(g)
    letter_prob = float(torch.softmax(logits, dim=0)[flat].sum())
    top = tokenizer.decode([int(logits.argmax())])
    return Scored(torch.stack(scores), ttft_ms, letter_prob, top, answer_text)


class LetterScorer:
    """The default scorer for models that answer by letter: option-letter logits at the first answer token,
    timed as TTFT."""

    name = "letter"

    def __call__(self, session: StreamingSession, question: Question) -> Scored:
        options = list(question.options)
        prompt = session.template.question_text(format_question(question.question.strip(), options))
        groups = letter_token_ids(session.adapter.tokenizer, prompt, len(options))
        flat = _flat(groups)
        session.flush()  # stream work, not question work: outside TTFT as in session.ask
        start = time.perf_counter()
        logits = session.question_logits(question.question, options)  # (vocab,)
        logits[flat.to(logits.device)].cpu()  # the copy waits for the device: TTFT is complete
        ttft = (time.perf_counter() - start) * 1000
        return score_letters(logits, groups, session.adapter.tokenizer, ttft)


@dataclass
class WordLetterScorer:
    """For models that answer ``word-letter`` ("red (B)"): the model writes its free-form answer greedily
    up to the opener, then the letter is scored there as :class:`LetterScorer` scores it at the first token.

    TTFT is to the first answer token (the word's), as in ``session.ask``; ``answer_text`` in the rows is
    the word. ``max_word_tokens`` bounds the word; past it (or at an end token) the opener is appended.
    """

    max_word_tokens: int = 8
    name = "word-letter"

    def __call__(self, session: StreamingSession, question: Question) -> Scored:
        session.flush()
        out = session.letter_after_word(question.question, list(question.options), self.max_word_tokens)
        groups = letter_token_ids(session.adapter.tokenizer, out.prompt + out.written, len(question.options))
        return score_letters(out.logits, groups, session.adapter.tokenizer, out.ttft_ms, out.word)


class ClozeScorer:
    """Multiple choice without letters: the question asked plainly, each option scored by how likely the
    model is to answer exactly it (``session.option_logprobs``): the cloze formulation small models are
    evaluated with, as they answer in words before they can match words to letters. TTFT: the one packed
    forward that scores every option."""

    name = "cloze"

    def __call__(self, session: StreamingSession, question: Question) -> Scored:
        session.flush()
        scores, ttft = session.option_logprobs(question.question, list(question.options))
        return Scored(scores, ttft)


def extract_count(text: str) -> str:
    """OVO-Bench's REC answer extraction: every run of digits in the answer, joined (``"3 times"`` -> ``"3"``,
    ``"three"`` -> ``""``)."""
    return "".join(re.findall(r"\d+", text or ""))


class CountScorer:
    """Free-form count questions (OVO-Bench REC; ``answer_format`` ``count``): the question alone, answered
    greedily from the cache (at most :data:`~hermes_policy.eval.protocol.COUNT_MAX_NEW_TOKENS` tokens), then
    :func:`extract_count`. ``scores`` is empty (there are no options); ``answer_text`` is the written answer
    and ``top_token`` its extracted count. TTFT is to the first generated token, as in ``session.ask``."""

    name = "count"

    def __call__(self, session: StreamingSession, question: Question) -> Scored:
        from hermes_policy.eval.protocol import COUNT_MAX_NEW_TOKENS

        session.flush()
        answer = session.ask(question.question, max_new_tokens=COUNT_MAX_NEW_TOKENS)
        return Scored(torch.zeros(0), answer.ttft_ms, None, extract_count(answer.answer), answer.answer)


SCORERS: dict[str, Callable[[], Scorer]] = {"letter": LetterScorer, "word-letter": WordLetterScorer,
                                            "cloze": ClozeScorer}


def scorer_for(adapter: ModelAdapter, scoring: str = "auto") -> Scorer:
    """The scorer named ``scoring``; ``auto``: the one the model declares (``adapter.mc_scoring``:
    ``letter`` for hub models; a model trained here records its own in ``frontend.json``)."""
    name = adapter.mc_scoring if scoring == "auto" else scoring
    if name not in SCORERS:
        source = f"model {adapter.name!r} declares" if scoring == "auto" else "asked for"
        raise EvalError(f"unknown scoring {name!r} ({source}); choose auto, {', '.join(SCORERS)}")
    return SCORERS[name]()


__all__ = [
    "SCORERS",
    "ClozeScorer",
    "CountScorer",
    "LetterScorer",
    "Scored",
    "Scorer",
    "WordLetterScorer",
    "extract_count",
    "letter_token_ids",
    "scorer_for",
]
