"""Multiple choice answered in words: ``word-letter`` ("red (B)": decoding up to the letter, the session's
read, the scorer, training) and cloze scoring (each option's likelihood as the free-form answer)."""

from __future__ import annotations

import pytest
import torch
from conftest import _tiny
from oracles import reference_logits

from hermes_policy import SessionConfig, StreamingSession
from hermes_policy.data import Question, VideoItem, synthesize
from hermes_policy.eval import (
    ClozeScorer,
    EvalError,
    LetterScorer,
    PolicyRecipe,
    WordLetterScorer,
    evaluate,
    scorer_for,
)
from hermes_policy.mc_format import LETTER_OPENER, WordLetter, decode_to_opener, format_question, word_letter
from hermes_policy.models.base import EncodedChunk


class _CharTokenizer:
    """Every character is a token (id = code point)."""

    class _Out:
        def __init__(self, ids):
            self.input_ids = ids

    def __call__(self, text, add_special_tokens=False):
        return self._Out([ord(c) for c in text])

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(i) for i in ids)


def _scripted(text: str, end: int = 0):
    """A feed whose greedy continuation spells ``text`` then ``end``; and the log of what was fed."""
    fed: list[int] = []

    def spike(i: int) -> torch.Tensor:
        logits = torch.zeros(256)
        logits[ord(text[i]) if i < len(text) else end] = 1.0
        return logits

    def feed(ids: list[int]) -> torch.Tensor:
        fed.extend(ids)
        return spike(len(fed))

    return spike(0), feed, fed


def test_word_letter_answers_are_the_word_then_the_lettered_option():
    assert word_letter("red", "B") == "red (B)" and word_letter("red", "B").startswith("red" + LETTER_OPENER)


@pytest.mark.parametrize("script, expected", [
    ("red (B)", "red ("),  # stops right after the opener: the next token is the letter
    ("red", "red ("),  # the model ends its answer: the opener is appended
    ("abcdefghij", "abcde ("),  # no opener within the limit: appended after it
])
def test_decode_to_opener(script: str, expected: str):
    first, feed, fed = _scripted(script)
    ids, logits = decode_to_opener(first, feed, _CharTokenizer(), stop_ids={0}, limit=5)
    assert "".join(map(chr, ids)) == expected == "".join(map(chr, fed))
    # the logits returned are the ones after the last token in context
    assert int(logits.argmax()) == (ord(script[len(expected)]) if len(expected) < len(script) else 0)


@torch.no_grad()
def test_letter_after_word_is_one_full_forward_and_leaves_the_cache(frames):
    """The oracle: the letter's logits equal one HF forward over prefix, frames, question and the word."""
    tiny = _tiny("tiny-embedded")
    session = StreamingSession(tiny, config=SessionConfig(chunk_frames=4))
    frames = frames[:6]  # one chunk of 4 and the 2 that the question flushes
    session.ingest(frames)
    session.flush()
    before = [session.cache.keys(i).clone() for i in range(tiny.num_layers)]
    out = session.letter_after_word("What colour is the circle?", ["red", "blue", "green", "white"],
                                    max_word_tokens=3)
    assert isinstance(out, WordLetter) and out.written.endswith(LETTER_OPENER) and len(out.ids) >= 3
    assert all(torch.equal(session.cache.keys(i), k) for i, k in enumerate(before))

    parts = [tiny.encode_text(session.template.prefix, 0)]
    for i in range(0, len(frames), 4):
        parts.append(tiny.encode_frames(frames[i: i + 4], parts[-1].end_position if i else len(parts[0])))
    text = session.template.question_text(format_question("What colour is the circle?",
                                                          ["red", "blue", "green", "white"]))
    assert out.prompt == text
    parts.append(tiny.encode_question(text, parts[-1].end_position))
    parts.append(tiny.encode_ids(torch.tensor(out.ids), parts[-1].end_position))
    reference = reference_logits(tiny, EncodedChunk.cat(parts), "eager")
    torch.testing.assert_close(out.logits, reference, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def items():
    return synthesize(seed=2, videos=2, frames=8, size=(64, 64), per_category=1)


def test_scorer_follows_the_models_trained_format(monkeypatch):
    tiny = _tiny("tiny-embedded")  # shared across tests: changed through monkeypatch only
    assert isinstance(scorer_for(tiny), LetterScorer)
    monkeypatch.setattr(tiny, "mc_scoring", "word-letter")
    assert isinstance(scorer_for(tiny), WordLetterScorer)
    assert isinstance(scorer_for(tiny, "letter"), LetterScorer)
    assert isinstance(scorer_for(tiny, "cloze"), ClozeScorer)
    with pytest.raises(EvalError, match="unknown scoring"):
        scorer_for(tiny, "bogus")


def test_the_letter_after_the_word_decides_the_answer(items, monkeypatch):
    """letter_after_word planted to write the answer word and spike at the right (or a wrong) letter."""
    tiny = _tiny("tiny-embedded")
    monkeypatch.setattr(tiny, "mc_scoring", "word-letter")
    tok = tiny.tokenizer
    unique = [VideoItem(it.video, [Question(q.time, q.frame, f"{q.question} [{v}.{i}]", q.options, q.answer,
                                            q.answer_text, q.category) for i, q in enumerate(it.questions)])
              for v, it in enumerate(items)]
    truth = {q.question: q for it in unique for q in it.questions}
    shift = {"value": 0}

    def planted(self, question, options, max_word_tokens=8):
        q = truth[question]
        letter = "ABCD"[("ABCD".index(q.answer) + shift["value"]) % len(options)]
        logits = torch.zeros(tiny.lm_head.out_features)
        logits[tok.convert_tokens_to_ids(letter)] = 10.0
        written = q.answer_text + LETTER_OPENER
        return WordLetter(self.template.question_text(format_question(question, options)),
                          list(tok(written, add_special_tokens=False).input_ids), written, logits, 1.0)

    monkeypatch.setattr(StreamingSession, "letter_after_word", planted)
    recipes = [PolicyRecipe("full")]
    result = evaluate(tiny, unique, recipes, progress=False, reference=False)
    assert result.accuracy("full") == 1.0
    assert [r.answer_text for r in result.rows] == [truth[r.question].answer_text for r in result.rows]
    shift["value"] = 1
    assert evaluate(tiny, unique, recipes, progress=False, reference=False).accuracy("full") == 0.0


@torch.no_grad()
def test_training_reads_the_letter_where_the_session_does():
    """quick_eval's word-letter read (one packed-layout batch) equals the streaming session's, on one model."""
    from tiny_training import TINY, _tiny_train_config

    from hermes_policy.models.byte_tokenizer import bpe_tokenizer
    from hermes_policy.models.frontend_lm import FrontendLMAdapter
    from hermes_policy.models.scratch import build_scratch
    from hermes_policy.training import Batcher, Sample, answer_logits, tokenizer_corpus
    from hermes_policy.video import SyntheticVideo

    cfg = _tiny_train_config(mc_answer="word-letter")
    tokenizer = bpe_tokenizer(tokenizer_corpus(cfg), TINY.vocab_size)
    model, frontend = build_scratch(TINY, tokenizer, seed=0)
    model.eval()
    batcher = Batcher(model, tokenizer, frontend)
    video = SyntheticVideo(seed=4, frames=5, width=cfg.frame_size, height=cfg.frame_size)
    frames = list(video.frames())
    question, options = "What colour is the circle?", ["red", "blue", "green", "white"]
    batch = batcher([Sample.single([f.image for f in frames], format_question(question, options), "red (A)",
                                   "real-time")])
    trained = answer_logits(model, batcher, batch, "word-letter")
    assert not torch.equal(answer_logits(model, batcher, batch, "letter"), trained)

    session = StreamingSession(FrontendLMAdapter("scratch", model, tokenizer, frontend),
                               config=SessionConfig(chunk_frames=2))
    session.ingest(frames)
    streamed = session.letter_after_word(question, options).logits
    torch.testing.assert_close(trained.float(), streamed, atol=1e-3, rtol=1e-3)


def test_train_config_rejects_an_unknown_answer_format():
    from tiny_training import _tiny_train_config

    with pytest.raises(ValueError, match="mc_answer"):
        _tiny_train_config(mc_answer="word")


def test_word_letter_training_targets():
    from hermes_policy.training import mc_target

    q = Question(1.0, 2, "What colour is the circle?", ("blue", "red", "green", "white"), "B", "red", "real-time")
    assert mc_target(q, "letter") == "B" and mc_target(q, "word-letter") == "red (B)"


def test_option_matching_drills_give_the_word_and_ask_its_letter():
    import random

    from tiny_training import _tiny_train_config

    from hermes_policy.training import MATCH_QUESTION, qa_sample

    cfg = _tiny_train_config(mc_answer="word-letter", match_share=1.0, branches=6, min_clip=6, max_clip=6,
                             caption_share=0.0)
    branches = qa_sample(random.Random(0), cfg).branches
    assert {b.category for b in branches} == {"match"}
    for b in branches:
        first, *options, _ = b.question.split("\n")
        word, letter = b.target[:-4], b.target[-2]
        assert first == MATCH_QUESTION.format(word) and options["ABCD".index(letter)] == f"{letter}. {word}"
    with pytest.raises(ValueError, match="match_share"):
        _tiny_train_config(match_share=0.1)  # the drill answers word-letter; a letter-only model has no word


@torch.no_grad()
def test_cloze_scores_are_answer_log_likelihoods_of_one_full_forward(frames):
    """The oracle: each option's score is log P(option tokens, then an end token) from one HF forward."""
    tiny = _tiny("tiny-embedded")
    session = StreamingSession(tiny, config=SessionConfig(chunk_frames=4))
    session.ingest(frames[:4])
    session.flush()
    lengths = session.cache.lengths()
    options = ["red", "blue", "12"]
    scores, ttft = session.option_logprobs("What colour is the circle?", options)
    assert scores.shape == (3,) and ttft > 0 and session.cache.lengths() == lengths

    text = session.template.question_text("What colour is the circle?")
    prefix = tiny.encode_text(session.template.prefix, 0)
    parts = [prefix, tiny.encode_frames(frames[:4], len(prefix))]
    question = tiny.encode_question(text, parts[-1].end_position)
    stop = sorted(session._stop_ids)
    for option, score in zip(options, scores):
        ids = tiny.tokenizer(option, add_special_tokens=False).input_ids
        seq = EncodedChunk.cat([*parts, question, tiny.encode_ids(torch.tensor(ids), question.end_position)])
        tiny.set_attention("eager")
        try:
            logits = tiny.model(inputs_embeds=seq.embeds[None], position_ids=tiny.position_ids(seq.positions),
                                use_cache=False).logits[0].float()
        finally:
            tiny.set_attention("hermes")
        logp = torch.log_softmax(logits[len(seq) - len(ids) - 1:], dim=-1)
        expected = sum(logp[i, t] for i, t in enumerate(ids)) + torch.logsumexp(logp[len(ids), stop], 0)
        torch.testing.assert_close(score, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("meta, expected", [
    ({}, "letter"),
    ({"training": {"mc_answer": "word-letter"}}, "word-letter"),
    ({"training": {"mc_answer": "word-letter"}, "mc_scoring": "cloze"}, "cloze"),
])
def test_a_trained_model_says_how_its_answers_are_read(tmp_path, meta, expected):
    import json

    from hermes_policy.models.frontend import mc_scoring

    (tmp_path / "frontend.json").write_text(json.dumps({"kind": "conv", "config": {}, **meta}))
    assert mc_scoring(tmp_path) == expected
