"""The `epng` command: one sub-command per module in `epng.cli`.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Heavy imports live inside ``run`` so that ``epng --help``
stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from epng import __version__
from epng.errors import EPNGError

# command name -> module implementing it
COMMANDS: dict[str, str] = {
    "synth": "epng.cli.synth",
    "check-data": "epng.cli.check_data",
    "prepare": "epng.cli.prepare",
    "score": "epng.cli.score",
    "train": "epng.cli.train",
    "evaluate": "epng.cli.evaluate",
    "predict": "epng.cli.predict",
    "demo": "epng.cli.demo",
    "synth-refer": "epng.cli.synth_refer",
    "res-eval": "epng.cli.res_eval",
    "bench": "epng.cli.bench",
    "phrases": "epng.cli.phrases",
    "app": "epng.cli.app",
    "export": "epng.cli.export",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="epng",
        description="EPNG: end-to-end real-time Panoptic Narrative Grounding.",
    )
    parser.add_argument("--version", action="version", version=f"epng {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except EPNGError as err:
        print(f"epng {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"epng {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
