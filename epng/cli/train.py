"""`epng train`: train EPNG from a YAML config (one process, or several through torchrun)."""

from __future__ import annotations

import argparse

from epng.configs import list_configs

HELP = "train EPNG (resumes when --output holds a checkpoint; several processes through torchrun)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        required=True,
        help=f"YAML file, or the name of a bundled config ({', '.join(list_configs())}); an existing file wins",
    )
    parser.add_argument("--output", required=True, help="run folder: checkpoints, logs, best/ and final/ models")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optim.lr=2e-4 data.root=DIR"
    )
    parser.epilog = (
        "Multi-GPU: torchrun --nproc_per_node 4 -m epng.cli.main train --config png_r101_bert --output ...\n"
        "Re-running the same command on the same --output resumes exactly where it stopped.\n"
        "\n"
        "Preemption: SIGTERM or SIGUSR1 (run.preempt_signals) during training stops every process after\n"
        "the current optimizer step, writes a checkpoint and exits with status 143; re-run to resume.\n"
        "Partial checkpoint folders left by a kill during a write are removed when the run starts.\n"
        "Exit status: 0 finished, 143 preempted (checkpoint written), 2 bad input or configuration,\n"
        "130 interrupted (Ctrl-C).\n"
        "Input limits (image pixels, caption length, file sizes): limits.NAME=N or EPNG_<NAME>=N."
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def run(args: argparse.Namespace) -> int:
    from epng.engine.config import load_config
    from epng.engine.preemption import PREEMPTED_EXIT_CODE
    from epng.engine.trainer import train

    cfg = load_config(args.config, args.overrides)
    result = train(cfg, args.output)
    if "preempted" in result:
        return PREEMPTED_EXIT_CODE
    best = result.get("best_ar")
    print(f"done: {result['step']} steps, best val AR {best:.2f}; models in {args.output}/best and {args.output}/final")
    return 0
