"""``--limit NAME=VALUE``: the input limits (:mod:`epng.io.limits`) of the commands that read untrusted files."""

from __future__ import annotations

import argparse

from epng.io.limits import InputLimits, env_var


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """``--limit NAME=VALUE`` (repeatable), applied by :func:`apply_limits`."""
    defaults = InputLimits()
    listed = ", ".join(f"{name} ({getattr(defaults, name):,})" for name in InputLimits.names())
    parser.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"raise or lower an input limit (repeatable); the limits and their defaults: {listed}. "
        f"Environment variables set them too, e.g. {env_var('max_image_pixels')}=100000000",
    )


def apply_limits(args: argparse.Namespace) -> None:
    """Make the ``--limit`` values (over the environment's and the defaults) this process's limits."""
    from epng.io.limits import parse_assignments, set_limits

    if args.limit:
        set_limits(parse_assignments(args.limit))
