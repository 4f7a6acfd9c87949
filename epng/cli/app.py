"""`epng app`: a web page to ground narratives in your own images (Gradio)."""

from __future__ import annotations

import argparse
from pathlib import Path

from epng.cli.inference_args import add_inference_arguments, load_predictor
from epng.cli.limit_args import add_limit_arguments, apply_limits

HELP = "serve a web page that grounds the phrases of a narrative in an uploaded image"

DEFAULT_CHECKPOINT = Path("demo_out/run/best")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", default=None, help=f"saved model folder (default: {DEFAULT_CHECKPOINT}, from `make demo`)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    add_inference_arguments(parser)
    add_limit_arguments(parser)


def resolve_checkpoint(checkpoint: str | None) -> Path:
    """``--checkpoint``, or `DEFAULT_CHECKPOINT` when it exists; else a `ConfigError` saying how to get one."""
    from epng.errors import ConfigError

    if checkpoint is not None:
        return Path(checkpoint)
    if DEFAULT_CHECKPOINT.is_dir():
        return DEFAULT_CHECKPOINT
    raise ConfigError(
        f"no model: {DEFAULT_CHECKPOINT} does not exist here; run `make demo` to train one, "
        "or pass --checkpoint DIR (a saved model folder, e.g. a run's best/)"
    )


def run(args: argparse.Namespace) -> int:
    import logging

    from epng.errors import ConfigError

    args.checkpoint = str(resolve_checkpoint(args.checkpoint))
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ConfigError('the web app needs gradio: pip install "epng[app]"') from None
    from epng.app.server import launch

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.getLogger("epng.app").setLevel(logging.INFO)
    apply_limits(args)
    predictor = load_predictor(args)
    print(f"epng app: model {args.checkpoint} on {predictor.device} ({predictor.dtype})")
    try:
        launch(predictor, args.host, args.port)
    except OSError as err:  # the port is taken, or the address is not this machine's
        reason = str(err).split(". ")[0]  # gradio goes on about its own parameter names
        where = f"{args.host}:{args.port}"
        raise ConfigError(f"cannot serve on {where} ({reason}); choose another --port or --host") from None
    return 0
