"""Whether a service mounts the gateway's data volume, so images can travel as DataRefs instead of bytes.

Like the shared-memory probe: the gateway writes a few random bytes into a file on its data volume and asks the
service (Info with `data_probe`) to read that path as it reads any DataRef; only the same bytes count. The
answer is kept for `ttl_s` per service client (a restarted service may mount something else) and the file is removed
at once, whatever the answer.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from pathlib import Path

from modelyard.runtime.calls import CallFailed, ServiceClient
from modelyard.v1 import types_pb2

PROBE_FOLDER = Path(".modelyard") / "probes"  # relative to the data volume


class DataVolumeProbe:
    """`shares(client)`: the service behind `client` reads this data volume's files (cached for `ttl_s`)."""

    def __init__(self, data_root: Path, ttl_s: float = 60.0) -> None:
        self.data_root = data_root
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._answers: dict[int, tuple[float, bool]] = {}  # by client (its replicas)

    def shares(self, client: ServiceClient) -> bool:
        with self._lock:
            known = self._answers.get(id(client))
        if known is not None and time.monotonic() - known[0] < self.ttl_s:
            return known[1]
        answer = self._probe(client)
        with self._lock:
            self._answers[id(client)] = (time.monotonic(), answer)
        return answer

    def _probe(self, client: ServiceClient) -> bool:
        token = secrets.token_bytes(16)
        relative = PROBE_FOLDER / f"{client.name}-{secrets.token_hex(8)}"
        path = self.data_root / relative
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(token)
        except OSError:  # a read-only volume: no DataRefs of our own files either way
            return False
        try:
            info = client.call(
                lambda service: service.Info, types_pb2.InfoRequest(data_probe=relative.as_posix(), data_token=token)
            )
            return bool(info.data_probe_ok)
        except CallFailed:
            return False
        finally:
            path.unlink(missing_ok=True)
