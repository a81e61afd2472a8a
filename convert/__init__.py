"""Converters: published EAGLE-3 drafters (SafeAILab EAGLE, SpecForge, vLLM speculators) -> SlimSpec, and back.

``slimspec-convert`` (``convert/cli.py``) is a thin wrapper over :func:`convert_drafter`.
"""

from .convert import ConversionReport, convert_drafter
from .formats import ConversionError, detect_format, read_source

__all__ = ["ConversionError", "ConversionReport", "convert_drafter", "detect_format", "read_source"]
