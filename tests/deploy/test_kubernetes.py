"""Kubernetes manifests (deploy/k8s): rendered as `kubectl apply -k` would, validated offline against the
Kubernetes JSON schemas (kubernetes-validate ships them per version), and read as a specification."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

from modelyard.gateway.config import GatewayConfig
from modelyard.ops.planner import MODEL_SERVICES

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
BASE, GPU, TOKEN = K8S / "base", K8S / "overlays" / "gpu", K8S / "overlays" / "token"
NAMESPACE = "modelyard"
Resource = dict[str, Any]


# -- rendering ---------------------------------------------------------------------------------------------------
# `kubectl kustomize` when kubectl is installed; otherwise this renderer of the subset deploy/k8s uses (resources,
# namespace, configMapGenerator files, images, JSON-patch `add` targeted by kind and label). It refuses anything
# else, and a test checks that it agrees with kubectl wherever both run.

KNOWN_KEYS = {"apiVersion", "kind", "namespace", "resources", "configMapGenerator", "images", "patches"}


def _add(document: Any, pointer: str, value: Any) -> None:
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in pointer.lstrip("/").split("/")]
    for part in parents:
        document = document[int(part)] if isinstance(document, list) else document.setdefault(part, {})
    if isinstance(document, list):
        document.insert(len(document) if last == "-" else int(last), value)
    else:
        document[last] = value


def _matches(resource: Resource, target: dict[str, str]) -> bool:
    labels = resource["metadata"].get("labels", {})
    selector = dict(s.split("=", 1) for s in target.get("labelSelector", "").split(",") if s)
    return resource["kind"] == target.get("kind", resource["kind"]) and all(
        labels.get(k) == v for k, v in selector.items()
    )


def render_subset(folder: Path) -> list[Resource]:
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert set(spec) <= KNOWN_KEYS, f"the test renderer does not know {set(spec) - KNOWN_KEYS}"
    resources: list[Resource] = []
    for entry in spec.get("resources", []):
        path = folder / entry
        resources += render_subset(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    for generator in spec.get("configMapGenerator", []):
        data = {}
        for item in generator["files"]:
            key, _, file = item.rpartition("=")
            data[key or Path(file).name] = (folder / file).read_text()
        resources.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data}
        )
    for patch in spec.get("patches", []):
        operations = yaml.safe_load((folder / patch["path"]).read_text())
        for resource in resources:
            if _matches(resource, patch["target"]):
                for op in operations:
                    assert op["op"] == "add", f"the test renderer applies only 'add', not {op['op']}"
                    _add(resource, op["path"], copy.deepcopy(op["value"]))
    if "namespace" in spec:
        for resource in resources:
            if resource["kind"] != "Namespace":
                resource["metadata"]["namespace"] = spec["namespace"]
    return resources


def render(folder: Path) -> list[Resource]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return render_subset(folder)
    out = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def unhashed(resources: list[Resource]) -> list[Resource]:
    """Generated ConfigMap names without kustomize's content-hash suffix (and references to them)."""
    text = re.sub(r"(-config)-[a-z0-9]{10}\b", r"\1", yaml.safe_dump(resources))
    return list(yaml.safe_load(text))


@pytest.fixture(scope="module")
def base() -> list[Resource]:
    return unhashed(render(BASE))


@pytest.fixture(scope="module")
def gpu() -> list[Resource]:
    return unhashed(render(GPU))


@pytest.fixture(scope="module")
def token() -> list[Resource]:
    return unhashed(render(TOKEN))


def find(resources: list[Resource], kind: str, name: str) -> Resource:
    [match] = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    return match


def pod(resources: list[Resource], name: str) -> dict[str, Any]:
    return find(resources, "Deployment", name)["spec"]["template"]["spec"]  # type: ignore[no-any-return]


# -- the specification -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [all_versions()[0], all_versions()[-1]])
@pytest.mark.parametrize("variant", ["base", "gpu", "token"])
def test_every_manifest_validates_against_the_kubernetes_schemas(variant: str, version: str, request) -> None:  # type: ignore[no-untyped-def]
    resources = request.getfixturevalue(variant)
    deployables = len(MODEL_SERVICES) + 1  # and the gateway
    assert len(resources) == 1 + 2 + deployables + 2 * deployables  # namespace, volumes, config maps, pods + services
    for resource in resources:
        # strict: unknown fields are errors too (a misspelt key would otherwise be dropped by the API server)
        kubernetes_validate.validate(resource, version, strict=True)


def test_the_renderer_used_without_kubectl_agrees_with_kubectl() -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    for folder in (BASE, GPU, TOKEN):
        key = lambda r: (r["kind"], r["metadata"]["name"])  # noqa: E731
        assert sorted(unhashed(render(folder)), key=key) == sorted(render_subset(folder), key=key)


@pytest.mark.parametrize("service", MODEL_SERVICES)
def test_each_model_service_is_a_deployment_behind_a_headless_service(base: list[Resource], service: str) -> None:
    deployment = find(base, "Deployment", service)
    svc = find(base, "Service", service)
    assert svc["spec"]["clusterIP"] == "None"  # DNS lists every ready replica: the gateway balances itself
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"modelyard/{service}:latest"
    assert container["args"][:4] == ["serve", service, "--config", f"/config/{service}.yaml"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 50051, "metrics": 9090}
    assert {(p["name"], p["port"]) for p in svc["spec"]["ports"]} == {("grpc", 50051), ("metrics", 9090)}
    assert all(r["metadata"].get("namespace", NAMESPACE) == NAMESPACE for r in (deployment, svc))


@pytest.mark.parametrize("name", [*MODEL_SERVICES, "gateway"])
def test_probes_ask_grpc_health_on_the_serving_port(base: list[Resource], name: str) -> None:
    [container] = pod(base, name)["containers"]
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": port}, probe
    # Loading weights may take minutes: the startup probe allows it before liveness may restart the pod.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


@pytest.mark.parametrize("name", [*MODEL_SERVICES, "gateway"])
def test_pods_run_as_the_images_non_root_user_without_privileges(base: list[Resource], name: str) -> None:
    spec = pod(base, name)
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 10001
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in spec["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False and context["capabilities"] == {"drop": ["ALL"]}
        assert context["readOnlyRootFilesystem"] is True
    namespace = find(base, "Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def mounts_of(spec: dict[str, Any]) -> dict[str, tuple[dict[str, Any], bool]]:
    """mount path -> (volume source, read-only)"""
    volumes = {v["name"]: v for v in spec["volumes"]}
    [container] = spec["containers"]
    return {m["mountPath"]: (volumes[m["name"]], m.get("readOnly", False)) for m in container["volumeMounts"]}


@pytest.mark.parametrize("service", MODEL_SERVICES)
def test_config_models_and_data_are_mounted_where_the_configs_expect_them(base: list[Resource], service: str) -> None:
    mounts = mounts_of(pod(base, service))
    config, read_only = mounts["/config"]
    assert read_only and config["configMap"]["name"] == f"{service}-config"
    assert f"{service}.yaml" in find(base, "ConfigMap", f"{service}-config")["data"]
    models, read_only = mounts["/models"]
    assert read_only and models["persistentVolumeClaim"]["claimName"] == "modelyard-models"
    data, read_only = mounts["/data"]
    assert not read_only and data["persistentVolumeClaim"]["claimName"] == "modelyard-data"


def test_the_data_volume_is_shared_read_write_by_the_gateway_and_every_service(base: list[Resource]) -> None:
    claim = find(base, "PersistentVolumeClaim", "modelyard-data")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for name in (*MODEL_SERVICES, "gateway"):
        source, read_only = mounts_of(pod(base, name))["/data"]
        assert source["persistentVolumeClaim"]["claimName"] == "modelyard-data" and not read_only


@pytest.mark.parametrize("service", MODEL_SERVICES)
def test_the_config_maps_hold_the_same_configs_as_deploy_config(service: str) -> None:
    shipped = (REPO / "deploy" / "config" / f"{service}.yaml").read_text()
    copy = (BASE / "config" / f"{service}.yaml").read_text()
    assert copy.startswith("# Generated by `make generate`") and copy.endswith(shipped), "run `make generate`"


def test_the_gateway_finds_each_services_replicas_through_dns(base: list[Resource], tmp_path: Path) -> None:
    text = find(base, "ConfigMap", "gateway-config")["data"]["gateway.yaml"]
    raw = yaml.safe_load(text)
    raw["data_root"] = str(tmp_path)  # /data in the pod
    config = GatewayConfig.model_validate(raw, context={"base_dir": tmp_path})
    assert sorted(config.services) == sorted(MODEL_SERVICES)
    for name, endpoint in config.services.items():
        svc = find(base, "Service", name)
        assert endpoint.addresses == [f"dns:///{name}.{svc['metadata']['namespace']}.svc.cluster.local:50051"]
    gateway = find(base, "Deployment", "gateway")
    assert gateway["spec"]["replicas"] == 1 and gateway["spec"]["strategy"]["type"] == "Recreate"  # one job store
    assert mounts_of(pod(base, "gateway"))["/config"][0]["configMap"]["name"] == "gateway-config"
    assert "clusterIP" not in find(base, "Service", "gateway")["spec"]  # a stable address for clients


def test_the_gpu_overlay_gives_each_model_service_one_gpu_and_the_gateway_none(
    base: list[Resource], gpu: list[Resource]
) -> None:
    for service in MODEL_SERVICES:
        [container] = pod(gpu, service)["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod(gpu, service)[
            "tolerations"
        ]
        assert find(gpu, "Deployment", service)["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
        assert "nvidia.com/gpu" not in pod(base, service)["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in str(pod(gpu, "gateway"))


def test_the_schemas_catch_a_misspelt_key(base: list[Resource]) -> None:
    deployment = copy.deepcopy(find(base, "Deployment", "medsam"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"] = {"prot": 50051}
    with pytest.raises(kubernetes_validate.ValidationError, match="prot"):
        kubernetes_validate.validate(deployment, all_versions()[-1], strict=True)


def test_the_token_overlay_makes_the_services_require_the_secret_the_gateway_sends(
    base: list[Resource], token: list[Resource]
) -> None:
    def env(resources: list[Resource], name: str) -> dict[str, str]:
        return {e["name"]: e["value"] for e in pod(resources, name)["containers"][0].get("env", [])}

    for name, variable in [
        *((s, "MODELYARD_TOKEN_FILE") for s in MODEL_SERVICES),
        ("gateway", "MODELYARD_SERVICE_TOKEN_FILE"),
    ]:
        source, read_only = mounts_of(pod(token, name))["/secrets"]
        assert read_only and source["secret"]["secretName"] == "modelyard-service-token"
        assert env(token, name) == {variable: "/secrets/service.token"}
        assert env(base, name) == {} and "/secrets" not in mounts_of(pod(base, name))  # opt-in
