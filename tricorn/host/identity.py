"""This process's identity: pid file, user and group, process titles."""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass

from ..errors import ConfigError, UserError


class PidFile:
    """--pid: this process's id in a file, removed at exit if it is still ours."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.written = False

    def write(self) -> None:
        try:
            with open(self.path, "w") as f:
                f.write(f"{os.getpid()}\n")
        except OSError as exc:
            raise UserError(f"cannot write the pid file {self.path}: {exc.strerror}; check --pid") from None
        self.written = True

    def remove(self) -> None:
        try:
            with open(self.path) as f:
                ours = f.read().strip() == str(os.getpid())
            if self.written and ours:
                os.unlink(self.path)
        except OSError:
            pass


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    name: str  # for initgroups: the user's supplementary groups


def resolve_identity(user: str | None, group: str | None) -> Identity | None:
    """--user/--group as ids, checked before anything starts; None when there is nothing to change."""
    if user is None and group is None:
        return None
    try:
        entry = pwd.getpwnam(user) if user and not user.isdigit() else pwd.getpwuid(int(user or os.getuid()))
    except KeyError:
        raise ConfigError(f"unknown user {user!r}; check --user (a name from /etc/passwd or a uid)") from None
    try:
        gid = (grp.getgrnam(group).gr_gid if not group.isdigit() else grp.getgrgid(int(group)).gr_gid) \
            if group else entry.pw_gid
    except KeyError:
        raise ConfigError(f"unknown group {group!r}; check --group (a name from /etc/group or a gid)") from None
    identity = Identity(entry.pw_uid, gid, entry.pw_name)
    if os.geteuid() != 0 and (identity.uid != os.geteuid() or identity.gid != os.getegid()):
        raise ConfigError("--user/--group need tricorn to be started as root; leave them out otherwise")
    return identity


def switch_to(identity: Identity) -> None:
    """Drop root for good: groups first, while we still may."""
    if os.getuid() == identity.uid and os.getgid() == identity.gid:
        return
    os.initgroups(identity.name, identity.gid)
    os.setgid(identity.gid)
    os.setuid(identity.uid)


def set_title(title: str) -> None:
    """`ps` shows "tricorn: worker 2 [app:app]" where setproctitle is installed; nothing otherwise."""
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(title)
