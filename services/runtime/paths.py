"""Path resolution with errors that say what was looked for and why it is not there.

The seed pipeline lost a day to a config path that existed on the host but was never mounted into the
container; every "not found" here says whether that is what happened.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath, PureWindowsPath

from modelyard.runtime.errors import ConfigError, InvalidInput

# Mount points that are part of every container, not volumes a user mounted.
# /sbin/docker-init: the init compose's `init: true` (docker run --init) mounts in.
_SYSTEM_MOUNTS = (
    "/",
    "/proc",
    "/sys",
    "/dev",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/run",
    "/sbin/docker-init",
)
_HOST_ONLY_PREFIXES = ("/home/", "/Users/", "/mnt/", "/media/", "/Volumes/", "/scratch/", "/nfs/")


def in_container() -> bool:
    """True inside a Docker/Podman container or a Kubernetes pod (MODELYARD_IN_CONTAINER overrides)."""
    forced = os.environ.get("MODELYARD_IN_CONTAINER")
    if forced is not None:
        return forced.lower() in ("1", "true", "yes")
    return (
        Path("/.dockerenv").exists() or Path("/run/.containerenv").exists() or "KUBERNETES_SERVICE_HOST" in os.environ
    )


def user_mounts() -> list[str]:
    """Mount points that look like volumes (not the container's own system mounts)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    points = []
    for line in lines:
        fields = line.split()
        if len(fields) < 5:
            continue
        point = fields[4]
        if any(point == m or (m != "/" and point.startswith(m + "/")) for m in _SYSTEM_MOUNTS):
            continue
        points.append(point)
    return sorted(set(points))


def looks_like_host_path(raw: str) -> bool:
    """A path written for the host: a Windows drive, a home folder, or a top folder this filesystem lacks."""
    if PureWindowsPath(raw).drive:
        return True
    posix = PurePosixPath(raw)
    if not posix.is_absolute():
        return False
    if raw.startswith(_HOST_ONLY_PREFIXES):
        return True
    top = posix.parts[1] if len(posix.parts) > 1 else ""
    return bool(top) and not Path("/", top).exists()


def explain_missing(raw: str, resolved: Path, what: str, base: Path | None = None) -> str:
    """A message naming the missing path, how it was resolved, and the likely cause."""
    parts = [f"{what} not found: {resolved}"]
    if base is not None and not Path(raw).is_absolute():
        parts.append(f"('{raw}' is relative, so it was resolved against the config file's folder {base})")
    if in_container() and looks_like_host_path(raw):
        mounts = ", ".join(user_mounts()) or "none"
        parts.append(
            f"— this looks like a path on the host that was never mounted into this container "
            f"(mounted volumes here: {mounts}). Mount its folder as a volume and use the path inside "
            "the container (e.g. /config/..., /models/..., /data/...)"
        )
    else:
        parent = resolved.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        try:
            entries = sorted(p.name for p in parent.iterdir())[:12]
            parts.append(f"— the nearest existing folder is {parent}, holding: {', '.join(entries) or '(empty)'}")
        except OSError:
            pass
    return " ".join(parts)


def resolve_path(raw: str | Path, base: Path | None) -> Path:
    """Expand ~ and resolve a relative path against `base` (the config file's folder), never the cwd."""
    path = Path(raw).expanduser()
    if not path.is_absolute():
        if base is None:
            raise ConfigError(f"relative path '{raw}' has no config folder to resolve against; use an absolute path")
        path = base / path
    return path


def existing_file(raw: str | Path, base: Path | None, what: str) -> Path:
    path = resolve_path(raw, base)
    if not path.is_file():
        if path.is_dir():
            raise ConfigError(f"{what} must be a file, but {path} is a folder")
        raise ConfigError(explain_missing(str(raw), path, what, base))
    return path


def existing_dir(raw: str | Path, base: Path | None, what: str) -> Path:
    path = resolve_path(raw, base)
    if not path.is_dir():
        raise ConfigError(explain_missing(str(raw), path, what, base))
    return path


def confined(root: Path, relative: str, must_exist: bool = True) -> Path:
    """Resolve a data reference under `root`, refusing absolute paths, `..` and symlink escapes. An output
    reference (must_exist=False) may name a file that is not there yet."""
    if not relative:
        raise InvalidInput("data reference is empty: give a path relative to the data volume")
    if Path(relative).is_absolute() or PureWindowsPath(relative).drive:
        raise InvalidInput(f"data reference '{relative}' is absolute: give a path relative to the data volume ({root})")
    root_real = root.resolve()
    try:
        target = (root_real / relative).resolve()
        inside = target.is_relative_to(root_real)
        exists = inside and target.exists()
        ancestor = target.parent  # for an output: the nearest folder on its way that exists
        while inside and not must_exist and not ancestor.exists():
            ancestor = ancestor.parent
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a NUL byte, a name too long
        raise InvalidInput(
            f"data reference {relative!r} cannot be resolved under the data volume {root}: {exc}"
        ) from None
    if not inside:
        raise InvalidInput(f"data reference '{relative}' escapes the data volume {root}: stay inside it")
    if must_exist and not exists:
        raise InvalidInput(f"data reference '{relative}' does not exist under the data volume {root}")
    if not must_exist and not ancestor.is_dir():
        raise InvalidInput(f"data reference '{relative}' cannot be created: {ancestor} is a file, not a folder")
    return target


DEFAULT_MAX_FILE_BYTES = 512 * 1024 * 1024


def open_confined(root: Path, relative: str, max_bytes: int | None = None) -> tuple[int, int]:
    """An open descriptor and the size of the regular file a data reference names (see `confined`). The checks
    run on the open file, so a name swapped for a FIFO, a device or a folder after `confined` looked is refused
    too, never read (reading a FIFO blocks forever). The caller closes the descriptor."""
    path = confined(root, relative)
    try:
        # The path is fully resolved, so its last part is no link; O_NONBLOCK lets a FIFO open without blocking.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidInput(f"data reference '{relative}' cannot be opened: {exc.strerror or exc}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise InvalidInput(f"data reference '{relative}' is not a regular file under the data volume {root}")
    if max_bytes is not None and st.st_size > max_bytes:
        os.close(fd)
        raise InvalidInput(
            f"data reference '{relative}' is {st.st_size} bytes, over this service's limit of {max_bytes} bytes "
            "per file (runtime.max_file_mb)"
        )
    os.set_blocking(fd, True)
    return fd, int(st.st_size)


def read_confined(root: Path, relative: str, max_bytes: int | None = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file a data reference names, at most `max_bytes` of them (see `open_confined`)."""
    fd, size = open_confined(root, relative, max_bytes)
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(size + 1)
    except OSError as exc:
        raise InvalidInput(f"data reference '{relative}' cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > size:  # it grew while being read: the size checked is no longer its size
        raise InvalidInput(f"data reference '{relative}' changed while it was read; retry once it is complete")
    return data
