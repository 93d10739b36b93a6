"""Omni-GPT2o: can a frozen language model learn to draw?

The public names load lazily (the diffusers habit), so light commands such as `make-shapes` and
`prepare-coco` do not pay for importing torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "OmniConfig": "omni_gpt2o.config",
    "PRESETS": "omni_gpt2o.config",
    "get_preset": "omni_gpt2o.config",
    "OmniGPT2o": "omni_gpt2o.model",
    "build_model": "omni_gpt2o.model",
    "OmniGPT2oPipeline": "omni_gpt2o.pipeline",
}
__all__ = ["OmniConfig", "PRESETS", "get_preset", "OmniGPT2o", "build_model", "OmniGPT2oPipeline", "__version__"]

if TYPE_CHECKING:
    from omni_gpt2o.config import PRESETS, OmniConfig, get_preset
    from omni_gpt2o.model import OmniGPT2o, build_model
    from omni_gpt2o.pipeline import OmniGPT2oPipeline


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'omni_gpt2o' has no attribute {name!r}")
