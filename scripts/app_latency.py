"""Latency of `epng app` per request: the model time the page shows, and the whole round trip
through `gradio_client` on loopback (upload, queue, model, picture back), median of N requests.

    python scripts/app_latency.py --checkpoint demo_out/run/best --fast --requests 20

Half the requests bring a new picture (the image is encoded again), half only a new narrative
on the same picture (the encoded image is reused).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers_app import served_app, synthetic_scene  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="demo_out/run/best")
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()

    import gradio_client

    from epng.device import isa_summary
    from epng.inference import Predictor

    predictor = Predictor.from_pretrained(args.checkpoint, device="cpu", fast=args.fast)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scenes = [synthetic_scene(tmp / f"scene_{k}.png", index=k, size=256) for k in (1, 3)]
        plain = ["There is a small green square on the road.", "We can see a red circle under the sky."]
        with served_app(predictor, tmp / "examples") as url:
            client = gradio_client.Client(url, verbose=False)
            model_ms, round_ms = {"new image": [], "same image": []}, {"new image": [], "same image": []}
            for i in range(args.requests + 2):  # the first two warm up
                kind = "new image" if i % 2 == 0 else "same image"
                path, narrative = scenes[(i // 2) % 2]
                text = narrative if kind == "new image" else plain[(i // 2) % 2]
                start = time.perf_counter()
                result = client.predict(gradio_client.handle_file(str(path)), text, 0.5, api_name="/ground")
                elapsed = 1000 * (time.perf_counter() - start)
                if i < 2:
                    continue
                round_ms[kind].append(elapsed)
                model_ms[kind].append(float(re.search(r"Latency: ([\d.]+) ms", result[3]).group(1)))
    print(f"checkpoint {args.checkpoint}, fast={args.fast}, CPU ISA: {', '.join(isa_summary())}")
    for kind in model_ms:
        print(
            f"{kind}: model (page) {statistics.median(model_ms[kind]):.1f} ms, "
            f"round trip {statistics.median(round_ms[kind]):.1f} ms (median of {len(model_ms[kind])})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
