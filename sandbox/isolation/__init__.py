"""The isolation layers around a model worker.

The parent builds a scrubbed environment (``build_worker_env``) and spawns the worker with only
the channel descriptor. The worker calls ``apply_isolation`` before it loads any model: a
cgroup, a private network namespace, rlimits, an unprivileged uid, ``PR_SET_NO_NEW_PRIVS``,
Landlock and seccomp, each reported in an ``IsolationReport`` sent in the ``ready`` frame.

    env        allowlisted environment, inherited descriptors
    rules      Landlock rules for a worker (pure: paths and rights in, rules out)
    landlock   Landlock syscalls
    seccomp    the syscall filter (libseccomp through ctypes)
    netns      private network namespace
    limits     rlimits and a cgroup v2 leaf
    creds      dropping root
    probe      what the host supports
    report     per-layer report; strict mode's verdict
    settings   what the gateway asks for (``--sandbox JSON``)
    apply      the order in which the worker applies them
"""

from sandbox.isolation.apply import apply_isolation
from sandbox.isolation.env import ALLOWED_ENV_KEYS, build_worker_env
from sandbox.isolation.report import LAYERS, IsolationReport, LayerReport, describe_missing
from sandbox.isolation.settings import SandboxSettings

__all__ = [
    "ALLOWED_ENV_KEYS",
    "LAYERS",
    "IsolationReport",
    "LayerReport",
    "SandboxSettings",
    "apply_isolation",
    "build_worker_env",
    "describe_missing",
]
