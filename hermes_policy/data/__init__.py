"""Streaming-QA data: questions with known answers, dataset files, loaders."""

from hermes_policy.data.questions import CATEGORIES, Question, questions_at, sample_questions

__all__ = ["CATEGORIES", "Question", "questions_at", "sample_questions"]
