"""Is a secret file private enough to use? (Reads the group and user databases, nothing else.)

A secret file must be readable by this process alone: no access at all for others, no write or
execute for the group, and group read only when the group is this process's own (effective)
group **and no other account belongs to it**: no other member listed for it, no other user
with it as primary group. That is how Kubernetes mounts a Secret for a non-root pod: mode
0440, group the pod's ``fsGroup``, which is then the process's group too, and in the image
only the gateway's account has it (docs/deploy.md). On a host where that group is shared
(``users``), group-readable secrets are refused as before. A group the databases do not know
has no other accounts in them either: a container started with an arbitrary group id.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat


def too_open(info: os.stat_result, own_gid: int | None = None, own_user: str | None = None) -> bool:
    """True when users other than this process may read or change the file ``info`` describes."""
    mode = stat.S_IMODE(info.st_mode)
    if mode & stat.S_IRWXO or mode & (stat.S_IWGRP | stat.S_IXGRP):
        return True
    if not mode & stat.S_IRGRP:
        return False
    gid = os.getegid() if own_gid is None else own_gid
    return info.st_gid != gid or not group_is_private(gid, own_user)


def group_is_private(gid: int, own_user: str | None = None) -> bool:
    """No account but ours belongs to group ``gid``."""
    me = own_user if own_user is not None else _own_user()
    try:
        members = set(grp.getgrgid(gid).gr_mem)
    except KeyError:
        members = set()
    if members - {me}:
        return False
    return all(p.pw_name == me for p in pwd.getpwall() if p.pw_gid == gid)


def _own_user() -> str | None:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return None
