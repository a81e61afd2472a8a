"""Training and healing of SlimSpec drafters (``slimspec-train``): self-distillation data, EAGLE-3 training-time
test, forward-KL / CE / LK losses."""
