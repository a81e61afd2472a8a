"""SlimSpec: EAGLE-3 drafters with a low-rank LM head.

The model itself lives in the two Hub files at the repository root (``configuration_slimspec.py``,
``modeling_slimspec.py``), which install as top-level modules; this package holds the tooling around them.
"""

from configuration_slimspec import SlimSpecConfig
from modeling_slimspec import SlimSpecDrafter

__all__ = ["SlimSpecConfig", "SlimSpecDrafter"]
__version__ = "0.1.0"
