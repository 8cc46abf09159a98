import hashlib
from pathlib import Path

from modelyard.runtime.checkpoints import sha256_of


def test_a_checkpoint_digest_is_the_sha256_of_the_whole_file_read_in_blocks(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # over one 1 MiB block, so blocks are joined
    path = tmp_path / "weights.pth"
    path.write_bytes(data)
    assert sha256_of(path) == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty.pth").write_bytes(b"")
    assert sha256_of(tmp_path / "empty.pth") == hashlib.sha256(b"").hexdigest()
