"""Service config: YAML validated once at start-up by a schema that rejects unknown keys by name.

A service's YAML has two sections:

    model:    # the adapter's own schema (checkpoint, architecture, ...)
    runtime:  # RuntimeConfig below: device, memory, batching, queue, message size

Paths in `model` are resolved against the config file's folder (never the working directory) and must exist.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from modelyard.runtime.arrays import SHM_DIR
from modelyard.runtime.errors import ConfigError
from modelyard.runtime.paths import existing_dir, existing_file, explain_missing

CONFIG_ENV = "MODELYARD_CONFIG"
# Per-container overrides of the `runtime:` section, for orchestrators: compose's GPU overlay passes the GPU
# planner's memory fraction as MODELYARD_MEMORY_FRACTION, so one config file serves every placement (and
# MODELYARD_TOKEN_FILE names a mounted secret). An unset or empty variable changes nothing; a set one wins over the
# file and is validated like it.
RUNTIME_ENV = {
    "MODELYARD_MEMORY_FRACTION": "memory_fraction",
    "MODELYARD_DEVICE": "device",
    "MODELYARD_TOKEN_FILE": "token_file",
}
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _base_dir(info: ValidationInfo) -> Path | None:
    return (info.context or {}).get("base_dir")


def _file(value: Path, info: ValidationInfo) -> Path:
    try:
        return existing_file(value, _base_dir(info), "file")
    except ConfigError as exc:  # a ValueError lets pydantic report every problem at once
        raise ValueError(exc.message) from None


def _dir(value: Path, info: ValidationInfo) -> Path:
    try:
        return existing_dir(value, _base_dir(info), "folder")
    except ConfigError as exc:
        raise ValueError(exc.message) from None


# Use in a model schema for paths that must exist; relative values resolve against the config's folder.
ExistingFile = Annotated[Path, AfterValidator(_file)]
ExistingDir = Annotated[Path, AfterValidator(_dir)]


class RuntimeConfig(Strict):
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N (in a container the pinned GPU is cuda:0)")
    memory_need_mb: int | None = Field(
        None, ge=0, description="GPU memory the model needs at max_batch_size; None = the adapter's estimate"
    )
    memory_fraction: float | None = Field(
        None, gt=0, le=1, description="cap this process at a fraction of the GPU so neighbours stay safe"
    )
    max_batch_size: int = Field(8, ge=1, description="items per model call; halved on out-of-memory")
    batch_wait_ms: float = Field(0.0, ge=0, description="wait this long to gather concurrent requests into a batch")
    queue_size: int = Field(64, ge=1, description="requests waiting behind the running one; beyond: RESOURCE_EXHAUSTED")
    probe_up_after: int = Field(100, ge=1, description="successful calls before trying a larger batch after OOM")
    max_message_mb: int = Field(64, ge=1, description="largest gRPC message accepted or sent")
    grpc_threads: int = Field(16, ge=2, description="threads serving gRPC calls (the model runs on its own thread)")
    cpu_threads: int | None = Field(None, ge=1, description="torch intra-op threads; None = torch's default (all)")
    warmup: bool = Field(True, description="run a warm-up inference before reporting SERVING")
    drain_seconds: float = Field(30.0, ge=0, description="on SIGTERM, how long in-flight calls may finish")
    shared_memory_dir: Path = Field(SHM_DIR, description="where shared-memory regions live")
    shared_memory_uids: tuple[int, ...] = Field(
        (),
        description="uids besides this service's own whose shared-memory regions it opens (a caller running as "
        "another user); a region owned by anyone else is refused",
    )
    max_file_mb: int = Field(1024, ge=1, description="largest file a data reference may name (an image, a frame)")
    data_root: Path | None = Field(None, description="the data volume that data references are relative to")
    token_file: ExistingFile | None = Field(
        None, description="require `authorization: Bearer <token>` (the file's content) on every call but health"
    )

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not DEVICE_PATTERN.match(value):
            raise ValueError(f"device '{value}' is not one of auto, cpu, cuda, cuda:N")
        return value


M = TypeVar("M", bound=BaseModel)


class ServiceConfig(Strict, Generic[M]):
    model: M
    runtime: RuntimeConfig = RuntimeConfig()
    source: Path | None = Field(None, exclude=True, description="the file this config was read from")


def config_problems(exc: ValidationError, schema: type[BaseModel], prefix: str = "") -> list[str]:
    """One line per problem in `exc`, each naming its key as the file spells it: `prefix` is where `schema` sits
    in the file ("" when it is the whole file, "runtime." for a service's section validated on its own).
    An unknown key comes with the known keys beside it and the closest one as a suggestion."""
    return [_describe(error, schema, prefix) for error in exc.errors()]  # type: ignore[arg-type]


def _describe(error: dict[str, Any], schema: type[BaseModel], prefix: str) -> str:
    where = prefix + ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        known = _known_keys(schema, error["loc"][:-1])
        hint = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
        suggestion = f" — did you mean '{hint[0]}'?" if hint else ""
        return f"unknown key '{where}'{suggestion} (known here: {', '.join(known)})"
    if error["type"] == "missing":
        return f"missing required key '{where}'"
    if error["type"] == "value_error":
        return f"'{where}': {error['ctx']['error']}"
    return f"'{where}': {error['msg']} (got {error.get('input')!r})"


def _known_keys(schema: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: type[BaseModel] = schema  # walks down nested config sections
    parts = list(loc)
    while parts:
        field = current.model_fields.get(str(parts.pop(0)))
        if field is None:
            return []
        annotation = field.annotation
        if get_origin(annotation) is dict:  # sections by name (the gateway's services): skip the name
            if not parts:
                return []
            parts.pop(0)
            annotation = get_args(annotation)[1]
        section = _section(annotation)
        if section is None:
            return []
        current = section
    return sorted(current.model_fields)


def _section(annotation: Any) -> type[BaseModel] | None:
    """The config section a field holds, also when it is optional (`TlsConfig | None`)."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def invalid_config(exc: ValidationError, schema: type[BaseModel], source: str, prefix: str = "") -> ConfigError:
    """The ConfigError for a file that `schema` rejected: every problem, one per line (see config_problems)."""
    problems = config_problems(exc, schema, prefix)
    return ConfigError(f"invalid config {source}:\n  - " + "\n  - ".join(problems))


def parse_config(data: dict[str, Any], model_schema: type[M], base_dir: Path | None, source: str) -> ServiceConfig[M]:
    """Validate a config mapping; every problem is listed in one ConfigError."""
    schema = ServiceConfig[model_schema]  # type: ignore[valid-type]
    try:
        config = schema.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise invalid_config(exc, schema, source) from None
    return config


def load_config(path: str | Path | None, model_schema: type[M]) -> ServiceConfig[M]:
    """Read and validate a service's YAML config (path from the argument or $MODELYARD_CONFIG)."""
    raw = str(path) if path else os.environ.get(CONFIG_ENV)
    if not raw:
        raise ConfigError(f"no config given: pass --config PATH or set {CONFIG_ENV}")
    file = Path(raw).expanduser().absolute()
    if not file.is_file():
        raise ConfigError(explain_missing(raw, file, "config file"))
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {file} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {file} must be a mapping with 'model:' and 'runtime:' sections")
    data, overrides = runtime_env_overrides(data)
    source = f"{file} (with {', '.join(overrides)} from the environment)" if overrides else str(file)
    config = parse_config(data, model_schema, file.parent, source)
    return config.model_copy(update={"source": file})


def runtime_env_overrides(
    data: dict[str, Any], environ: Mapping[str, str] = os.environ
) -> tuple[dict[str, Any], list[str]]:
    """The config mapping with RUNTIME_ENV variables applied to its `runtime:` section, and what was applied."""
    applied = {env: environ[env] for env in RUNTIME_ENV if environ.get(env, "").strip()}
    if not applied:
        return data, []
    runtime = data.get("runtime") or {}
    if not isinstance(runtime, dict):
        return data, []  # parse_config reports the malformed section
    runtime = {**runtime, **{RUNTIME_ENV[env]: value.strip() for env, value in applied.items()}}
    return {**data, "runtime": runtime}, [f"{env}={value.strip()}" for env, value in applied.items()]
