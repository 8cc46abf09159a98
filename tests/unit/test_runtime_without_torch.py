"""The runtime serves models that need no torch (wilor's MediaPipe backend runs in an environment without it)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Runs in a fresh interpreter where `import torch` fails, as in an environment without torch.
SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["torch"] = None  # any `import torch` now raises ImportError
    from modelyard.runtime.devices import select_device
    from modelyard.runtime.errors import ConfigError
    from modelyard.runtime.governor import MemoryGovernor
    import modelyard.runtime.host, modelyard.runtime.server  # the whole serving stack imports

    calls = []
    def model(batch):
        calls.append(list(batch))
        return [2 * x for x in batch]

    governor = MemoryGovernor("cpu", max_batch_size=2)
    assert governor.run(model, [1, 2, 3]) == [2, 4, 6], calls
    assert calls == [[1, 2], [3]], calls
    try:
        governor.run(lambda batch: batch[:1], [1, 2])
    except RuntimeError as exc:
        assert "1 results for 2 items" in str(exc)
    else:
        raise AssertionError("a short result list was accepted")
    assert select_device("auto", 0, None, "test") == "cpu"
    try:
        select_device("cuda", 0, None, "test")
    except ConfigError as exc:
        assert "sees no CUDA device" in exc.message
    else:
        raise AssertionError("cuda was accepted without torch")
    assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
    print("ok")
    """
)


def test_the_serving_stack_runs_without_torch() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
