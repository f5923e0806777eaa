"""Is a secret file private enough to use? Pure but for the process's own group id.

A secret file must be readable by this process alone: no access at all for others, no write or
execute for the group, and group read only when the group is this process's own (effective)
group. That last case is how Kubernetes mounts a Secret for a non-root pod: mode 0440, group
the pod's ``fsGroup``, which is then the process's group too (docs/deploy.md).
"""

from __future__ import annotations

import os
import stat


def too_open(info: os.stat_result, own_gid: int | None = None) -> bool:
    """True when users other than this process may read or change the file ``info`` describes."""
    mode = stat.S_IMODE(info.st_mode)
    if mode & stat.S_IRWXO or mode & (stat.S_IWGRP | stat.S_IXGRP):
        return True
    gid = os.getegid() if own_gid is None else own_gid
    return bool(mode & stat.S_IRGRP) and info.st_gid != gid
