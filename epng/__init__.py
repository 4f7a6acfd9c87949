"""EPNG: end-to-end real-time Panoptic Narrative Grounding (Wang et al., AAAI 2023)."""

__version__ = "0.1.0"
