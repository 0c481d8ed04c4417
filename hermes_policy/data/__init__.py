"""Streaming-QA data: questions with known answers, dataset files, loaders."""

from hermes_policy.data.dataset import (
    DATASET_FILE,
    BenchQuestion,
    DatasetError,
    VideoItem,
    read_dataset,
    synthesize,
    write_dataset,
)
from hermes_policy.data.loaders import load_annotations
from hermes_policy.data.questions import CATEGORIES, Question, questions_at, sample_questions

__all__ = [
    "CATEGORIES",
    "DATASET_FILE",
    "BenchQuestion",
    "DatasetError",
    "Question",
    "VideoItem",
    "load_annotations",
    "questions_at",
    "read_dataset",
    "sample_questions",
    "synthesize",
    "write_dataset",
]
