"""`epng predict`: masks for your own picture and narrative."""

from __future__ import annotations

import argparse

from epng.cli.inference_args import add_inference_arguments, load_predictor
from epng.cli.limit_args import add_limit_arguments, apply_limits

HELP = "ground the noun phrases of your own narrative in your own image"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a saved model folder (e.g. a run's best/)")
    parser.add_argument("--image", required=True, help="JPEG or PNG file")
    parser.add_argument(
        "--caption", required=True, help="the narrative; mark phrases with [brackets] unless --phrase is given"
    )
    parser.add_argument("--phrase", action="append", default=[], help="a phrase of the caption to segment (repeatable)")
    parser.add_argument(
        "--output", default="predict_out", help="folder for the mask PNGs and the overlay (default predict_out)"
    )
    parser.add_argument("--threshold", type=float, default=0.5)
    add_inference_arguments(parser)
    add_limit_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Writes one mask PNG per phrase and ``overlay.png``; prints one JSON line per phrase
    (``text``, ``start``, ``end``, ``source``, ``pixels``, ``file``) so the output pipes."""
    import json
    import re
    from pathlib import Path

    from PIL import Image

    from epng.viz import save_phrase_overlay

    apply_limits(args)
    predictor = load_predictor(args, threshold=args.threshold)
    result = predictor.predict(args.caption, args.phrase or None, image=args.image)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for k, (phrase, (start, end), mask) in enumerate(zip(result.phrases, result.spans, result.masks)):
        slug = re.sub(r"[^a-z0-9]+", "_", phrase.lower()).strip("_")[:40] or "phrase"
        path = out / f"mask_{k:02d}_{slug}.png"
        Image.fromarray(mask.astype("uint8") * 255).save(path)
        line = {"text": phrase, "start": start, "end": end, "source": result.phrase_source}
        print(json.dumps({**line, "pixels": int(mask.sum()), "file": str(path)}))
    save_phrase_overlay(result.image, result.masks, result.phrases, out / "overlay.png", result.caption, result.spans)
    return 0
