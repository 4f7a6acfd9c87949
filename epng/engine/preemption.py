"""Stopping a training run cleanly when the cluster preempts it.

Schedulers send a signal some time before they kill a job (SLURM and Kubernetes send
SIGTERM; SLURM's ``--signal`` can send SIGUSR1 earlier). While training, the handler of
each configured signal only sets a flag; the loop reads it after every optimizer step.
With several processes the flags are combined (a maximum over processes), so every
process sees the request at the same step and they all stop there together. The run
then writes a checkpoint and exits with :data:`PREEMPTED_EXIT_CODE`; re-running the
same command resumes from that checkpoint. A repeated signal changes nothing: launchers
(srun, torchrun) may deliver the same SIGTERM twice.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from types import FrameType

import torch

from epng.engine.distributed import DistContext, all_reduce_sum
from epng.errors import ConfigError

#: the exit status of a run stopped by a preemption signal after writing its checkpoint
#: (128 + SIGTERM, what a shell reports for a job that SIGTERM ended: schedulers treat it
#: as "terminated", so that a job that restarts on failure restarts and resumes)
PREEMPTED_EXIT_CODE = 143
UNCATCHABLE = ("SIGKILL", "SIGSTOP")


def parse_signals(names: Sequence[str]) -> list[signal.Signals]:
    """``["SIGTERM", "USR1"]`` -> signals; unknown and uncatchable names raise :class:`ConfigError`."""
    out = []
    for name in names:
        full = str(name).upper()
        full = full if full.startswith("SIG") else "SIG" + full
        if full in UNCATCHABLE or full not in signal.Signals.__members__:
            raise ConfigError(f"run.preempt_signals: {name!r} is not a signal a process can catch (e.g. SIGTERM)")
        out.append(signal.Signals[full])
    return out


class PreemptionFlag:
    """A context manager that installs the handlers of ``signals`` on entry and puts the
    previous handlers back on exit (handlers belong to the main thread only)."""

    def __init__(self, signals: Sequence[signal.Signals]):
        self.signals = list(signals)
        self.received: signal.Signals | None = None  # the first signal this process received
        self._previous: dict[signal.Signals, object] = {}

    def __enter__(self) -> PreemptionFlag:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)

    def requested(self, ctx: DistContext) -> bool:
        """True when some process received a signal (every process must call this at the same point)."""
        local = torch.tensor(float(self.received is not None))
        return all_reduce_sum(local, ctx).item() > 0
