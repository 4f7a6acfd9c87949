"""Load a saved model folder (``save_pretrained``: ``config.json`` + ``model.safetensors``) for use."""

from __future__ import annotations

from pathlib import Path

import torch

from epng.errors import CheckpointError
from epng.model.epng import EPNG


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> EPNG:
    """``EPNG.from_pretrained(checkpoint)`` in eval mode on ``device``, never from the network;
    a folder that is not a saved model raises :class:`CheckpointError` (with a hint to a
    run folder's ``best/`` or ``final/``)."""
    path = Path(checkpoint)
    if not path.is_dir():
        raise CheckpointError(f"--checkpoint {path}: not a directory")
    if not (path / "config.json").is_file():
        hint = [p.name for p in (path / "best", path / "final") if (p / "config.json").is_file()]
        raise CheckpointError(
            f"{path}: no config.json, not an EPNG checkpoint (save_pretrained folder)"
            + (f"; did you mean {path / hint[0]}?" if hint else "")
        )
    try:
        model = EPNG.from_pretrained(str(path))
    except CheckpointError:
        raise
    except Exception as err:  # a damaged safetensors file or config
        raise CheckpointError(f"{path}: cannot load the model ({_first_line(err)})") from None
    return model.to(device).eval()


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__
