"""The gateway's config (/config/gateway.yaml): data root, job store, the services and how to reach them."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import Field, ValidationError

from modelyard.runtime.calls import EndpointConfig
from modelyard.runtime.config import ExistingDir, ExistingFile, Strict, invalid_config
from modelyard.runtime.errors import ConfigError
from modelyard.runtime.paths import explain_missing


class TlsConfig(Strict):
    cert: ExistingFile
    key: ExistingFile


class GatewayConfig(Strict):
    data_root: ExistingDir = Field(description="the data volume; every input and output path is relative to it")
    store: Path | None = Field(None, description="SQLite job store (default: <data_root>/.modelyard/jobs.sqlite)")
    workers: int = Field(8, ge=1, description="items processed at once per job")
    max_running_jobs: int = Field(
        64, ge=1, description="jobs running at once; a submit beyond is answered RESOURCE_EXHAUSTED (retry later)"
    )
    max_concurrent_rpcs: int = Field(
        256,
        ge=1,
        description="calls in progress or waiting for a thread (streams included); beyond: RESOURCE_EXHAUSTED",
    )
    max_message_mb: int = Field(64, ge=1, description="largest gRPC message the gateway accepts in a call")
    grpc_threads: int = Field(32, ge=2, description="threads serving gRPC calls (each open progress stream holds one)")
    services: dict[str, EndpointConfig] = Field(default_factory=dict)
    token_file: ExistingFile | None = Field(None, description="require `authorization: Bearer <token>`")
    tls: TlsConfig | None = None
    resume_on_start: bool = Field(True, description="resume jobs that were running when the gateway stopped")
    max_item_attempts: int = Field(
        3,
        ge=1,
        description="an item cut short this many times (the gateway crashed, was killed or hung while it ran) "
        "is failed with its attempt count instead of being resumed again",
    )
    drain_seconds: float = Field(
        30.0,
        ge=0,
        description="SIGTERM: running items get this long to finish, then their calls are cancelled; "
        "the gateway is gone within drain_seconds + 5 s and its jobs resume on restart",
    )

    @property
    def store_path(self) -> Path:
        return self.store or self.data_root / ".modelyard" / "jobs.sqlite"


def load_gateway_config(path: str | Path) -> GatewayConfig:
    """gateway.yaml, validated (paths relative to its folder); ConfigError says what to fix."""
    file = Path(path).expanduser().absolute()
    if not file.is_file():
        raise ConfigError(explain_missing(path, file, "gateway config file"))
    data = yaml.safe_load(file.read_text()) or {}
    try:
        return GatewayConfig.model_validate(data, context={"base_dir": file.parent})
    except ValidationError as exc:
        raise invalid_config(exc, GatewayConfig, str(file)) from None
