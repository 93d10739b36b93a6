"""Omni-GPT2o: can a frozen language model learn to draw?"""

__version__ = "0.1.0"

from omni_gpt2o.config import PRESETS, OmniConfig, get_preset  # noqa: E402
from omni_gpt2o.model import OmniGPT2o, build_model  # noqa: E402
from omni_gpt2o.pipeline import OmniGPT2oPipeline  # noqa: E402

__all__ = ["PRESETS", "OmniConfig", "OmniGPT2o", "OmniGPT2oPipeline", "build_model", "get_preset", "__version__"]
