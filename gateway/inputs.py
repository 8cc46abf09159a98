"""Reading the files a job's inputs name, safely: only regular files are read.

A FIFO would block a reader forever in `open` (a thread no cancel can reach), a device may never end, a socket
or a folder cannot be read at all. So a file is opened without blocking and without following a final symlink
(paths here are already resolved and confined to the data root), and the open file itself is checked with
`fstat` before one byte is read: no window between checking a path and opening it.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from modelyard.runtime.errors import InvalidInput

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISLNK, "a symbolic link"),
)
_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def kind_of(mode: int) -> str:
    """What a file of this mode is, in words (for messages)."""
    for test, words in _KINDS:
        if test(mode):
            return words
    return "not a regular file"


def open_regular(path: Path, shown: str) -> int:
    """A file descriptor of `path`, which must be a regular file; InvalidInput (naming `shown`) otherwise."""
    try:
        fd = os.open(path, _FLAGS)
    except IsADirectoryError:
        raise InvalidInput(f"{shown} is a folder, not a file: name a file") from None
    except OSError as exc:  # ELOOP: a final symlink; ENXIO: a socket; EACCES, ENOENT ...
        if exc.errno is not None and exc.errno in (getattr(os, "ELOOP", -1), getattr(os, "ENXIO", -1)):
            try:
                words = kind_of(os.lstat(path).st_mode)
            except OSError:
                words = "not a regular file"
            raise InvalidInput(f"{shown} is {words}, not a regular file: name a file") from None
        raise InvalidInput(f"{shown} cannot be opened: {exc.strerror or exc}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise InvalidInput(f"{shown} is {kind_of(mode)}, not a regular file: name a file")
    return fd


def read_regular(path: Path, shown: str) -> bytes:
    """The bytes of the regular file `path` (see `open_regular`)."""
    fd = open_regular(path, shown)
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    except OSError as exc:
        raise InvalidInput(f"{shown} cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def plain(text: str) -> str:
    """A message without Python object reprs (`<_io.BytesIO object at 0x7f…>` tells a user nothing)."""
    return _REPR.sub("the data", text)
