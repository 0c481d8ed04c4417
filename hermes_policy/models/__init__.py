"""Model adapters, one per architecture family, and the registry that loads them by name."""

from hermes_policy.models.base import EncodedChunk, ModelAdapter, PromptTemplate
from hermes_policy.models.registry import BUILTIN_MODELS, SUPPORTED_ARCHITECTURES, load_model

__all__ = ["BUILTIN_MODELS", "SUPPORTED_ARCHITECTURES", "EncodedChunk", "ModelAdapter", "PromptTemplate", "load_model"]
