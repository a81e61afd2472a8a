"""Model card template (template.md) for SlimSpec drafters; installed as package data."""
