"""Commands run as an unrelated, unprivileged user, as a colleague on the host would run them.

Through setpriv rather than subprocess's user=/group=: those make subprocess fork() the test process itself,
and a fork of a process with gRPC and torch threads running can crash the child before it execs (seen as a
`cat` killed by SIGSEGV). Without them subprocess spawns with vfork, and setpriv drops the privileges in the
fresh process."""

from __future__ import annotations

from collections.abc import Sequence


def as_user(uid: int, argv: Sequence[str], gid: int | None = None) -> list[str]:
    """`argv` run as `uid` (and `gid`, by default the same number) with no supplementary groups."""
    group = uid if gid is None else gid
    return ["setpriv", f"--reuid={uid}", f"--regid={group}", "--clear-groups", "--", *argv]
