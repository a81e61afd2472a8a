"""SlimSpec: EAGLE-3 drafters with a low-rank LM head.

The model and its decoding live in the Hub files at the repository root (``HUB_CODE``), which install as
top-level modules and travel with every saved drafter; this package holds the tooling around them.
"""

from configuration_slimspec import SlimSpecConfig
from modeling_slimspec import SlimSpecDrafter

# The Hub code files, at the repository root and in every drafter folder (save_pretrained copies them).
HUB_CODE = ("configuration_slimspec.py", "modeling_slimspec.py", "generation_slimspec.py", "kernels_slimspec.py")
# A drafter folder's other files: weights, configs, card, and the custom_generate recipe.
DRAFTER_FILES = ("config.json", "generation_config.json", "model.safetensors", "README.md",
                 "custom_generate/generate.py", *HUB_CODE)

__all__ = ["DRAFTER_FILES", "HUB_CODE", "SlimSpecConfig", "SlimSpecDrafter"]
__version__ = "0.1.0"
