"""Test-only launcher of `epng` for the elastic-restart test: with ``EPNG_TEST_CRASH="R:S"``, the
worker of rank R exits abruptly (``os._exit(1)``, as a killed process would) right after its
optimizer step S, on the first launch only (torchrun's restarts count from 0).

    torchrun ... tests/helpers_crash_train.py train --config ... --output ...
"""

from __future__ import annotations

import os
import sys

import epng.engine.trainer as trainer
from epng.cli.main import main


def install_crash() -> None:
    spec = os.environ.get("EPNG_TEST_CRASH")
    if not spec or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return
    rank, step = (int(v) for v in spec.split(":"))
    if int(os.environ.get("RANK", "0")) != rank:
        return
    real_step = trainer.train_step

    def crashing_step(state, batch, setup):
        result = real_step(state, batch, setup)
        if result.stepped and state.step == step:
            os._exit(1)
        return result

    trainer.train_step = crashing_step


if __name__ == "__main__":
    install_crash()
    sys.exit(main(sys.argv[1:]))
