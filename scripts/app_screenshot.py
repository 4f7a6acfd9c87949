"""Save a screenshot of `epng app` for the README: an example scene grounded in headless Chromium.

    python scripts/app_screenshot.py [--checkpoint DIR] [--output docs/app_screenshot.png]

It drives the page exactly as ``tests/test_app_browser.py`` does (the helpers in
``tests/helpers_app.py``), on a loopback port. The model: ``--checkpoint``, else
``demo_out/run/best`` when it exists, else a random-weights tiny model (the picture then shows
the page, not what a trained model finds). The PNG is reduced to a 256-colour palette.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from helpers_app import (  # noqa: E402
    browser_missing,
    ground_in_browser,
    headless_chromium,
    save_full_page,
    served_app,
    tiny_checkpoint,
)

from epng.app.examples import load_examples  # noqa: E402
from epng.inference import Predictor  # noqa: E402

DEMO_CHECKPOINT = REPO / "demo_out" / "run" / "best"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="a saved model folder (default: demo_out/run/best)")
    parser.add_argument("--output", default=str(REPO / "docs" / "app_screenshot.png"))
    parser.add_argument("--example", type=int, default=0, help="which example scene to ground (default 0)")
    parser.add_argument("--width", type=int, default=1200, help="browser window width in pixels")
    args = parser.parse_args()
    reason = browser_missing()
    if reason:
        print(f"app_screenshot: {reason}", file=sys.stderr)
        return 2
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = args.checkpoint or (DEMO_CHECKPOINT if DEMO_CHECKPOINT.is_dir() else None)
        if checkpoint is None:
            print("app_screenshot: no checkpoint given and no demo_out/run/best: a random-weights tiny model")
            checkpoint = tiny_checkpoint(tmp / "model")
        predictor = Predictor.from_pretrained(checkpoint, device="cpu", precision="fp32")
        example = load_examples(tmp / "examples")[args.example]
        with served_app(predictor, tmp / "examples") as url, headless_chromium(args.width, 1000) as driver:
            page = ground_in_browser(driver, url, example.image, example.narrative)
            if page.message:
                print(f"app_screenshot: the page says {page.message!r}", file=sys.stderr)
                return 1
            shot = save_full_page(driver, tmp / "page.png", args.width)
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        Image.open(shot).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(output, optimize=True)
    print(f"{output} ({output.stat().st_size // 1024} KB, {page.latency})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
