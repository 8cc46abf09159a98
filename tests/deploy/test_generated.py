"""Each model service declares itself once (services/<name>/manifest.yaml); everything that lists model services
is generated from the manifests by `make generate`, and a fifth service needs nothing else."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

from modelyard.gateway.config import GatewayConfig
from modelyard.ops import generate
from modelyard.ops.planner import MODEL_SERVICES, declared_need, plan_gpus, service_configs
from modelyard.ops.volumes import Mounts
from modelyard.runtime.devices import GpuSnapshot, GpuState
from modelyard.runtime.manifest import installed_manifests, manifests_in
from tests.compose.conftest import compose_command

ROOT = Path(__file__).resolve().parents[2]
# What the generator reads and writes (the tree a fifth service is added to, copied).
TREE = ["services", "gateway", "ops", "demo", "protos", "deploy", "docker-compose.yml", "docker-compose.gpu.yml",
        "pyproject.toml", "README.md", "Makefile"]  # fmt: skip


def test_nothing_generated_is_stale() -> None:
    assert generate.stale(ROOT) == [], "run `make generate`"


def test_every_generated_file_says_so() -> None:
    for path in generate.outputs(ROOT):
        text = (ROOT / path).read_text()
        assert text.startswith("# Generated ") or "# >>> generated from " in text, path


def test_the_installed_services_are_the_manifests_of_the_source_tree() -> None:
    assert installed_manifests() == manifests_in(ROOT)
    assert MODEL_SERVICES == ("biomedclip", "medsam", "tapip3d", "wilor")


def test_a_manifest_that_is_not_its_folders_is_refused(tmp_path: Path) -> None:
    (tmp_path / "services" / "medsam").mkdir(parents=True)
    text = (ROOT / "services" / "medsam" / "manifest.yaml").read_text().replace("name: medsam", "name: medsan")
    (tmp_path / "services" / "medsam" / "manifest.yaml").write_text(text)
    with pytest.raises(Exception, match="name 'medsan' is not its folder's"):
        manifests_in(tmp_path)


def test_the_built_wheel_holds_every_module_and_manifest_of_the_source_tree(tmp_path: Path) -> None:
    """The images install the wheel (its package list), the tests import the tree: they hold the same files."""
    source = tmp_path / "source"  # a copy: an in-tree build would reuse build/lib from earlier builds
    for name in ["services", "gateway", "ops", "demo", "protos", "pyproject.toml", "README.md"]:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, source / name)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
        cwd=source, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [wheel] = tmp_path.glob("modelyard-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for package, folder in generate.packages(ROOT).items():
        if not folder:
            continue  # a sub-package: found under its parent's folder
        base = ROOT / folder
        prefix = package.replace(".", "/")
        for path in base.rglob("*"):
            if path.suffix in {".py", ".yaml"} and "__pycache__" not in path.parts and path.parent.name != "tests":
                expected.add(f"{prefix}/{path.relative_to(base).as_posix()}")
    missing = sorted(expected - shipped)
    assert not missing, f"the wheel lacks {missing}"


# -- a fifth service -----------------------------------------------------------------------------------------------

ECHO_MANIFEST = """\
name: echo
title: Echo
summary: returns what it is sent
proto_service: modelyard.v1.Echo
extra: gateway
environment: main
config: deploy/config/echo.yaml
memory:
  fallback_mb: [100, 1]
  fallback_note: "no model"
  host_request: 256Mi
  host_limit: 1Gi
swarm_replicas: 3
"""


@pytest.fixture(scope="module")
def fifth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tree with the echo reference service added as a model service of its own: its folder, its
    manifest and its default config; then the one command."""
    root = tmp_path_factory.mktemp("tree")
    for name in TREE:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / name)
    (root / "services" / "echo").mkdir()
    (root / "services" / "echo" / "__init__.py").write_text('"""Echo as a model service of its own."""\n')
    (root / "services" / "echo" / "manifest.yaml").write_text(ECHO_MANIFEST)
    (root / "deploy" / "config" / "echo.yaml").write_text("model: {}\nruntime:\n  memory_need_mb: 512\n")
    done = subprocess.run([sys.executable, "-m", "modelyard.ops.generate", "--root", str(root)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "wrote deploy/k8s/base/echo.yaml" in done.stdout
    return root


def test_a_fifth_service_gets_its_image_stage(fifth: Path) -> None:
    dockerfile = (fifth / "deploy" / "Dockerfile").read_text()
    stage = dockerfile.split("FROM runtime AS echo\n", 1)[1].split("\n\n", 1)[0]
    assert "COPY deploy/docker/requirements/echo.txt /tmp/requirements/" in stage
    assert (
        'CMD ["serve", "echo", "--config", "/config/echo.yaml", "--port", "50051", "--metrics-port", "9090"]' in stage
    )
    assert "echo" in (fifth / "deploy" / "docker" / "model-services.sh").read_text().split("MODEL_SERVICES_MAIN=")[1]
    assert '"echo": (["gateway"], False)' in (fifth / "deploy" / "docker" / "pyproject_extras.py").read_text()
    assert "h5py" in (fifth / "deploy" / "docker" / "requirements" / "echo.txt").read_text()  # its extra's


def test_a_fifth_service_in_an_environment_of_its_own_gets_a_venv_that_make_setup_builds(fifth: Path) -> None:
    manifest = fifth / "services" / "echo" / "manifest.yaml"
    manifest.write_text(ECHO_MANIFEST.replace("environment: main", "environment: own"))
    try:
        done = subprocess.run([sys.executable, "-m", "modelyard.ops.generate", "--root", str(fifth)],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "wrote Makefile" in done.stdout
        dry = {
            target: subprocess.run(["make", "-n", "-C", str(fifth), target], capture_output=True, text=True).stdout
            for target in ("setup", "integration", "clean")
        }
        assert '.venv-echo/bin/python -m pip install --quiet -e ".[gateway]"' in dry["setup"]
        assert "MODELYARD_ECHO_PYTHON=.venv-echo/bin/python" in dry["integration"]
        assert ".venv-echo" in dry["clean"]
    finally:
        manifest.write_text(ECHO_MANIFEST)
        subprocess.run([sys.executable, "-m", "modelyard.ops.generate", "--root", str(fifth)], timeout=120, check=True)


def test_a_fifth_service_gets_its_compose_and_swarm_entries_which_compose_accepts(fifth: Path) -> None:
    compose = yaml.safe_load((fifth / "docker-compose.yml").read_text())["services"]
    assert compose["echo"]["image"] == "modelyard/echo:${MODELYARD_TAG:-latest}"
    assert "echo" in compose["gateway"]["depends_on"]
    gpu = yaml.safe_load((fifth / "docker-compose.gpu.yml").read_text())["services"]
    assert gpu["echo"]["environment"] == {"MODELYARD_MEMORY_FRACTION": "${ECHO_MEMORY_FRACTION:-}"}
    swarm = yaml.safe_load((fifth / "deploy" / "swarm" / "docker-stack.yml").read_text())["services"]
    assert swarm["echo"]["deploy"]["replicas"] == "${ECHO_REPLICAS:-3}"
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    files = ["-f", "docker-compose.yml", "-f", "docker-compose.gpu.yml"]
    done = subprocess.run([*command, *files, "config"], cwd=fifth, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout)["services"]["echo"]["command"][:2] == ["serve", "echo"]


def test_a_fifth_service_gets_kubernetes_manifests_that_validate(fifth: Path) -> None:
    base = fifth / "deploy" / "k8s" / "base"
    resources = [r for r in yaml.safe_load_all((base / "echo.yaml").read_text()) if r]
    assert [r["kind"] for r in resources] == ["Deployment", "Service"]
    for resource in resources:
        kubernetes_validate.validate(resource, all_versions()[-1], strict=True)
    container = resources[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["memory"] == "1Gi"
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    assert "echo.yaml" in kustomization["resources"]
    assert {"name": "echo-config", "files": ["config/echo.yaml"]} in kustomization["configMapGenerator"]
    assert (base / "config" / "echo.yaml").read_text().endswith((fifth / "deploy/config/echo.yaml").read_text())


def test_a_fifth_service_is_known_to_the_gateway_in_every_deployment(fifth: Path) -> None:
    for path, address in [
        ("deploy/config/gateway.yaml", "echo:50051"),
        ("deploy/compose/tiny/gateway.yaml", "echo:50051"),
        ("deploy/swarm/gateway.yaml", "dns:///tasks.echo:50051"),
        ("deploy/k8s/base/config/gateway.yaml", "dns:///echo.modelyard.svc.cluster.local:50051"),
    ]:
        raw = {**yaml.safe_load((fifth / path).read_text()), "data_root": str(fifth)}  # /data: the container's
        config = GatewayConfig.model_validate(raw, context={"base_dir": fifth})
        assert config.services["echo"].addresses == [address], path


def test_a_fifth_service_gets_its_planner_row(fifth: Path) -> None:
    configs = service_configs(fifth / "deploy" / "config", known=[m.name for m in manifests_in(fifth)])
    assert set(configs) == {"biomedclip", "echo", "medsam", "tapip3d", "wilor"}
    need = declared_need("echo", configs["echo"], Mounts.default(fifth / "deploy" / "config"))
    snapshot = GpuSnapshot(True, "one idle GPU", [GpuState(0, "NVIDIA H200", "GPU-0", 143771, 0, 0)])
    assert (need.need_mb, need.source) == (512, "runtime.memory_need_mb")
    assert [(p.service, p.gpu) for p in plan_gpus(snapshot, [need]).placements] == [("echo", 0)]
