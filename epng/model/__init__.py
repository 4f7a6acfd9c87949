"""EPNG model: config, encoders, communicator, dense head and the preset registry."""

from epng.model.config import EPNGConfig
from epng.model.epng import EPNG
from epng.model.head import EPNGOutput
from epng.model.load import load_model
from epng.model.presets import DEFAULT_PRESET, build_epng, list_presets, preset_config, register_preset
from epng.model.text_encoder import load_tokenizer
from epng.model.visual_encoder import image_stats

__all__ = [
    "DEFAULT_PRESET",
    "EPNG",
    "EPNGConfig",
    "EPNGOutput",
    "build_epng",
    "image_stats",
    "list_presets",
    "load_model",
    "load_tokenizer",
    "preset_config",
    "register_preset",
]
