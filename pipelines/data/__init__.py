"""Synthetic raw card transactions, and a summary job over them."""

from pipelines.data.generate import GenerateConfig, GenerateResult, generate

__all__ = ["GenerateConfig", "GenerateResult", "generate"]
