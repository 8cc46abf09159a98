"""`modelyard doctor`: each check on its own, then once against this machine's Docker Engine when it is reachable."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from modelyard.ops.doctor import (
    check_configs,
    check_containers,
    check_engine,
    check_gpus,
    check_health,
    check_images,
    check_ports,
    check_swarm,
    check_volumes,
    image_name,
    planned_gpus,
)
from modelyard.ops.planner import MODEL_SERVICES, ServiceNeed, plan_gpus, write_env
from modelyard.ops.volumes import Mounts
from modelyard.runtime.cli import main
from modelyard.runtime.devices import GpuSnapshot, GpuState

REPO = Path(__file__).resolve().parents[2]


def write(folder: Path, name: str, model: dict, runtime: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"model": model, "runtime": runtime or {"data_root": "/data"}}))
    return path


@pytest.fixture
def mounts(tmp_path: Path) -> Mounts:
    for folder in ("config", "models", "data"):
        (tmp_path / folder).mkdir()
    return Mounts.default(tmp_path / "config", tmp_path / "models", tmp_path / "data")


def by_subject(findings: list) -> dict[str, object]:  # type: ignore[type-arg]
    return {f.subject: f for f in findings}


def test_a_host_path_in_a_config_is_named_as_one_that_will_not_exist_in_the_container(mounts: Mounts) -> None:
    # The seed's day: a path on the host handed to a container that never mounted it.
    upstream = {"root": "/home/rbalzani/medical-vqa/TAPIP3D", "checkpoint": "/models/tapip3d_final.pth"}
    (mounts.models / "tapip3d_final.pth").write_bytes(b"")
    write(mounts.config, "tapip3d", {"backend": "upstream", "upstream": upstream})
    findings = by_subject(check_configs(mounts, ["tapip3d"]))
    root = findings["tapip3d.yaml: model.upstream.root"]
    assert root.status == "fail"  # type: ignore[attr-defined]
    assert "/home/rbalzani/medical-vqa/TAPIP3D" in root.detail  # type: ignore[attr-defined]
    assert "will not exist inside the container" in root.detail  # type: ignore[attr-defined]
    assert "tapip3d.yaml: model.upstream.checkpoint" not in findings  # present under the models folder


def test_a_container_path_whose_host_folder_lacks_the_file_names_that_folder(mounts: Mounts) -> None:
    write(mounts.config, "medsam", {"checkpoint": "/models/medsam/medsam_vit_b.pth"})
    [finding] = check_configs(mounts, ["medsam"])
    assert finding.status == "fail" and finding.subject == "medsam.yaml: model.checkpoint"
    assert f"/models is mounted from {mounts.models.absolute()}, which has no medsam/medsam_vit_b.pth" in finding.detail


def test_schema_errors_are_reported_by_key_and_a_missing_config_by_file(mounts: Mounts) -> None:
    write(mounts.config, "wilor", {"backend": "mediapipe", "max_handz": 2})
    findings = check_configs(mounts, ["wilor", "medsam"])
    assert any(f.status == "fail" and "max_handz" in f.detail and "max_hands" in f.detail for f in findings)
    assert any(f.subject == "medsam.yaml" and f.status == "fail" and "no " in f.detail for f in findings)


def test_a_typo_in_the_gateway_config_is_reported_by_its_key_with_the_one_meant(mounts: Mounts) -> None:
    (mounts.config / "gateway.yaml").write_text(yaml.safe_dump({"data_root": "/data", "workerz": 4}))
    [finding] = [f for f in check_configs(mounts, []) if f.subject == "gateway.yaml"]
    assert finding.status == "fail"
    assert "unknown key 'workerz' — did you mean 'workers'?" in finding.detail


def test_the_shipped_cpu_configs_validate_as_their_containers_see_them(tmp_path: Path) -> None:
    mounts = Mounts.default(REPO / "deploy" / "config", tmp_path, tmp_path)
    findings = check_configs(mounts, ["tapip3d", "wilor"])
    # The gateway's config is checked with them: it names the services' addresses and the data root.
    assert {(f.subject, f.status) for f in findings} == {
        ("tapip3d.yaml", "ok"),
        ("wilor.yaml", "ok"),
        ("gateway.yaml", "ok"),
    }


def test_missing_volume_folders_are_warned_about_with_the_command_that_fixes_them(tmp_path: Path) -> None:
    mounts = Mounts.default(tmp_path, tmp_path / "models", tmp_path / "data")
    findings = by_subject(check_volumes(mounts))
    data = findings[f"/data <- {tmp_path / 'data'}"]
    assert data.status == "warn" and data.fix == f"mkdir -p {tmp_path / 'data'}"  # type: ignore[attr-defined]
    assert findings[f"/config <- {tmp_path}"].status == "ok"  # type: ignore[attr-defined]


def gpu(index: int) -> GpuState:
    return GpuState(index, "NVIDIA RTX A5000", f"GPU-{index}", 24576, 12, 0)


def test_the_gpu_plan_is_read_back_and_checked_against_what_nvml_sees(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    four = GpuSnapshot(True, "NVML", [gpu(0), gpu(1), gpu(2), gpu(3)])
    write_env(env, plan_gpus(four, [ServiceNeed("medsam", 20000, 8, "config"), ServiceNeed("wilor", 20000, 8, "c")]))
    planned = planned_gpus(env)
    assert set(planned) == {"medsam", "wilor"}
    two = GpuSnapshot(True, "NVML", [gpu(0), gpu(1)])
    findings = check_gpus(two, {"medsam": 3}, ["runc"])
    assert any(f.status == "fail" and "planned on GPU 3" in f.detail for f in findings)
    assert any(f.status == "warn" and "nvidia-container-toolkit" in f.fix for f in findings)
    assert all(f.status == "ok" for f in check_gpus(two, {"medsam": 1}, ["runc", "nvidia"]))


def test_without_nvml_gpus_are_a_warning_unless_a_plan_expects_them() -> None:
    none = GpuSnapshot(False, "NVML is not available")
    assert [f.status for f in check_gpus(none, {}, None)] == ["warn"]
    assert [f.status for f in check_gpus(none, {"medsam": 0}, None)] == ["fail"]


@pytest.fixture
def health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, servicer
    server.stop(None)


def test_health_is_read_from_grpc_health_v1(health_server: tuple[int, health.HealthServicer]) -> None:
    port, servicer = health_server
    address = f"127.0.0.1:{port}"
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert [f.status for f in check_health({"medsam": address})] == ["ok"]
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    [loading] = check_health({"medsam": address})
    assert loading.status == "fail" and "NOT_SERVING" in loading.detail


def test_a_service_that_does_not_answer_fails_the_health_check() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: nothing answers
        [finding] = check_health({"wilor": f"127.0.0.1:{port}"})
    assert finding.status == "fail" and "UNAVAILABLE" in finding.detail


def test_a_port_taken_by_another_process_fails_and_one_served_by_the_stack_does_not(
    health_server: tuple[int, health.HealthServicer],
) -> None:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        [taken] = check_ports([sock.getsockname()[1]])
    assert taken.status == "fail" and "in use by another process" in taken.detail
    port, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert [f.status for f in check_ports([port])] == ["ok"]


def test_modelyard_doctor_exits_non_zero_exactly_when_something_must_be_fixed(mounts: Mounts) -> None:
    write(mounts.config, "tapip3d", {"backend": "lift2d"})
    write(mounts.config, "wilor", {"backend": "mediapipe"})
    folders = ["--config-dir", str(mounts.config), "--models-dir", str(mounts.models), "--data-dir", str(mounts.data)]
    # medsam.yaml and biomedclip.yaml are missing: the model services would not start.
    assert main(["doctor", "--skip", "engine,images,gpus,ports,health", *folders]) == 1
    assert main(["doctor", "--skip", "engine,images,gpus,ports,health,configs", *folders]) == 0


# -- this machine's Docker Engine ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine():  # type: ignore[no-untyped-def]
    findings, client = check_engine()
    if client is None:
        pytest.skip(f"no Docker Engine reachable: {findings[0].detail}")
    yield findings, client
    client.close()


def test_against_the_real_engine_images_are_reported_as_the_engine_has_them(engine) -> None:  # type: ignore[no-untyped-def]
    findings, client = engine
    assert findings[0].status == "ok" and findings[0].detail.startswith("Docker Engine ")
    present = {tag for image in client.images.list() for tag in image.tags}
    for finding in check_images(client, MODEL_SERVICES):
        assert finding.status == ("ok" if finding.subject in present else "fail")
    assert {f.subject for f in check_images(client, MODEL_SERVICES)} == {
        image_name(s) for s in (*MODEL_SERVICES, "gateway")
    }
    assert all(f.check == "health" for f in check_containers(client))


def test_an_unreachable_engine_says_how_to_reach_one() -> None:
    import docker

    [finding], client = check_engine(lambda: docker.DockerClient(base_url="unix:///nonexistent.sock", timeout=2))
    assert client is None and finding.status == "fail" and "DOCKER_HOST" in finding.fix


# -- swarm: the engine's answers as the docker SDK returns them (tests/swarm checks a real swarm) ---------------


class _Service:
    def __init__(self, name: str, replicas: int, states: list[str], **extra: object) -> None:
        self.name = name
        self.attrs = {
            "Spec": {
                "Name": name,
                "Labels": {"com.docker.stack.namespace": "modelyard"},
                "Mode": {"Replicated": {"Replicas": replicas}},
                "TaskTemplate": {"ContainerSpec": {"Image": "modelyard/medsam:latest@sha256:0"}},
            },
            **extra,
        }
        self._tasks = [{"DesiredState": "running", "Status": {"State": s}} for s in states]

    def tasks(self) -> list[dict[str, object]]:
        return self._tasks


class _Swarm:
    def __init__(self, state: str, manager: bool, services: list[_Service] = ()) -> None:  # type: ignore[assignment]
        self._info = {"Swarm": {"LocalNodeState": state, "ControlAvailable": manager}}
        node = type("Node", (), {"id": "n1", "attrs": {
            "Spec": {"Role": "manager", "Availability": "active", "Labels": {}},
            "Status": {"State": "ready"},
            "Description": {"Hostname": "lab1", "Engine": {"EngineVersion": "20.10"}, "Resources": {
                "GenericResources": [{"DiscreteResourceSpec": {"Kind": "gpu", "Value": 2}}]}},
        }})()  # fmt: skip
        self.nodes = type("Nodes", (), {"list": lambda _self: [node]})()
        self.services = type("Services", (), {"list": lambda _self: list(services)})()

    def info(self) -> dict[str, object]:
        return self._info


def test_outside_a_swarm_doctor_says_nothing_about_one() -> None:
    assert check_swarm(_Swarm("inactive", manager=False)) == []


def test_on_a_swarm_worker_doctor_says_to_ask_a_manager() -> None:
    [finding] = check_swarm(_Swarm("active", manager=False))
    assert finding.status == "warn" and "manager" in finding.fix


def test_on_a_manager_nodes_and_each_services_healthy_replicas_are_reported() -> None:
    services = [
        _Service("modelyard_medsam", 2, ["running", "starting"]),
        _Service("modelyard_biomedclip", 1, ["starting"]),
        _Service("modelyard_gateway", 1, ["running"], UpdateStatus={"State": "rollback_completed", "Message": "x"}),
        _Service("modelyard_wilor", 1, ["running"]),
    ]
    found = by_subject(check_swarm(_Swarm("active", manager=True, services=services)))
    node = found["node lab1"]
    assert node.status == "ok" and "manager, ready, active" in node.detail and "gpu" in node.detail  # type: ignore[attr-defined]
    medsam = found["service modelyard_medsam"]
    assert medsam.status == "warn" and medsam.detail == "1/2 replicas healthy, 1 starting"  # type: ignore[attr-defined]
    assert found["service modelyard_biomedclip"].status == "fail"  # type: ignore[attr-defined]
    gateway = found["service modelyard_gateway"]
    assert gateway.status == "fail" and "rollback_completed" in gateway.detail  # type: ignore[attr-defined]
    assert found["service modelyard_wilor"].status == "ok"  # type: ignore[attr-defined]
