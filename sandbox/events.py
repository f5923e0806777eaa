"""What happens to a model worker, as events for the gateway to record (the audit trail).

``ModelWorker`` reports each worker that becomes ready (with the isolation layers it lacks),
refuses to start (a ``fatal`` frame: strict sandbox, unsafe weights, a load error), hangs,
exits unexpectedly (exit code or signal: a seccomp kill is SIGSYS, an OOM kill SIGKILL), and
each time the model turns unhealthy or healthy again. Events carry reason *codes* only, never
free text from the worker, which is untrusted and could carry anything.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass
from typing import Literal

WorkerEventKind = Literal["ready", "refused", "hung", "exited", "unhealthy", "recovered"]

_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")

# The return code of a worker whose status nobody could read: forked by a fork server that died
# before it (sandbox.spawner); its new parent reaped it. Neither an exit code nor a signal.
EXIT_STATUS_UNKNOWN = 256


@dataclass(frozen=True)
class WorkerEvent:
    kind: WorkerEventKind
    model: str
    reasons: tuple[str, ...]  # codes, e.g. ("worker_exited", "signal_sigkill")
    pid: int | None = None


def exit_reason(returncode: int) -> str:
    """``exit_code_N`` or ``signal_signame`` (what ``Popen.returncode`` says) as a code;
    ``exit_status_unknown`` for ``EXIT_STATUS_UNKNOWN``."""
    if returncode == EXIT_STATUS_UNKNOWN:
        return "exit_status_unknown"
    if returncode < 0:
        try:
            return "signal_" + signal.Signals(-returncode).name.lower()
        except ValueError:
            return f"signal_{-returncode}"
    return f"exit_code_{returncode}"


def safe_code(value: object, default: str) -> str:
    """``value`` if it is a well-formed reason code (from the untrusted worker), else ``default``."""
    return value if isinstance(value, str) and _CODE.fullmatch(value) else default
