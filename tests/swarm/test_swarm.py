"""The stack on Docker Swarm end to end: medvqa through the gateway's port (published on its node), the gateway
spreading MedSAM calls over both replicas it finds through `dns:///tasks.medsam`, and mid-job a replica's
container killed, a rolling update of MedSAM, and a replica made unhealthy: every job completes with each item
written exactly once and none failed, and Swarm brings the service back to two healthy replicas by itself. Last,
removing the stack and leaving the swarm leaves nothing behind.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from modelyard.ops.doctor import check_swarm
from modelyard.v1 import gateway_pb2
from tests.compose.test_stack import MEDVQA, check_medvqa, medvqa_input, output_for, server_signal_script
from tests.swarm.conftest import Stack, Swarm, docker, figure

# The first test pays for `swarm init` and the stack's start (and a first image build, when one is missing).
pytestmark = pytest.mark.timeout(1800)

# Items/s of the first job, which sizes the later ones so each outlasts its fault.
RATE: dict[str, float] = {}
# Reads this replica's request counter from its own metrics endpoint (not published, so from inside).
CALLS = (
    "import urllib.request\n"
    "text = urllib.request.urlopen('http://127.0.0.1:9090/metrics', timeout=5).read().decode()\n"
    "print(sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith('modelyard_request_seconds_count')))\n"
)


def calls_served(stack: Stack, task: dict[str, Any]) -> int:
    output = stack.container(task).exec_run(["python", "-c", CALLS]).output.decode()
    return int(float(output.strip().splitlines()[-1]))


def items_for(seconds: float) -> int:
    """Enough items that the job is still running `seconds` after its first item, at the measured rate."""
    return max(24, min(600, int(RATE.get("medvqa", 1.0) * seconds) + 8))


def submit_and_wait_mid_way(stack: Stack, count: int) -> tuple[Any, gateway_pb2.Job]:
    client = stack.deployment.client()
    input_rel = medvqa_input(stack.deployment, count)
    job = client.submit("medvqa", input_rel, output_for(input_rel), MEDVQA)
    deadline = time.monotonic() + 120
    while (current := client.get(job.id)).done < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert current.state == "running" and current.pending + current.running > 0, f"not mid-way: {current}"
    return client, job


def wait_done(client: Any, job: gateway_pb2.Job, timeout: float = 600) -> gateway_pb2.Job:
    deadline = time.monotonic() + timeout
    while (final := client.get(job.id)).state in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.5)
    client.close()
    return final


def test_the_gateway_finds_both_medsam_replicas_through_swarm_dns_and_spreads_calls_over_them(stack: Stack) -> None:
    assert len(stack.running("medsam")) == 2
    before = {t["ID"]: calls_served(stack, t) for t in stack.running("medsam")}
    count = 16
    client = stack.deployment.client()
    started = time.monotonic()
    input_rel = medvqa_input(stack.deployment, count)
    job = list(client.run("medvqa", input_rel, output_for(input_rel), MEDVQA))[-1].job
    took = time.monotonic() - started
    client.close()
    check_medvqa(stack.deployment, job, count)
    RATE["medvqa"] = count / took
    served = {t["ID"]: calls_served(stack, t) - before[t["ID"]] for t in stack.running("medsam")}
    figure(
        f"medvqa, {count} items: {took:.1f} s ({count / took:.2f} items/s); MedSAM calls per replica: "
        f"{sorted(served.values())}"
    )
    assert len(served) == 2 and all(n > 0 for n in served.values()), f"calls per replica: {served}"


def test_modelyard_doctor_reports_the_swarm_nodes_and_every_service_at_its_replicas(stack: Stack) -> None:
    findings = check_swarm(stack.swarm.engine)
    nodes = [f for f in findings if f.subject.startswith("node ")]
    ours = {f.subject.removeprefix(f"service {stack.name}_"): f for f in findings if stack.name in f.subject}
    assert nodes and all(f.status == "ok" and "manager, ready, active" in f.detail for f in nodes), nodes
    assert set(ours) == {"medsam", "biomedclip", "tapip3d", "wilor", "gateway"}
    assert ours["medsam"].status == "ok" and ours["medsam"].detail.startswith("2/2 replicas healthy"), ours
    assert ours["biomedclip"].detail.startswith("1/1") and ours["gateway"].detail.startswith("1/1")
    figure(f"doctor: {len(nodes)} node(s); " + "; ".join(f"{k} {f.detail}" for k, f in sorted(ours.items())))


def test_a_killed_replica_loses_no_item_and_swarm_starts_a_new_one(stack: Stack) -> None:
    count = items_for(20)
    client, job = submit_and_wait_mid_way(stack, count)
    victim = stack.running("medsam")[0]
    stack.container(victim).kill()
    killed = time.monotonic()
    back = stack.wait_replicas("medsam", 2, without={victim["ID"]})
    final = wait_done(client, job)
    figure(
        f"kill: replica back healthy after {back:.1f} s; job of {count} items done {time.monotonic() - killed:.1f} s "
        f"after the kill, {final.done} done, {final.failed} failed"
    )
    check_medvqa(stack.deployment, final, count)


def test_a_rolling_update_of_medsam_mid_job_fails_no_item(stack: Stack) -> None:
    old = {t["ID"] for t in stack.running("medsam")}
    count = items_for(100)  # the update takes 50-90 s here; each replica it replaces mid-job counts
    client, job = submit_and_wait_mid_way(stack, count)
    marker = uuid.uuid4().hex[:8]
    started = time.monotonic()
    docker_update = ["service", "update", "--detach", "--env-add", f"MODELYARD_TEST_ROLL={marker}"]
    docker(*docker_update, f"{stack.name}_medsam")
    replaced_mid_job = 0  # old replicas told to stop (SIGTERM: they drain) while the job was running
    gone: set[str] = set()
    while (state := (stack.service("medsam").attrs.get("UpdateStatus") or {}).get("State")) != "completed":
        assert state in (None, "updating"), f"the update ended {state}: {stack.service('medsam').attrs['UpdateStatus']}"
        assert time.monotonic() - started < 300, "the rolling update took over 300 s"
        stopping = old - {t["ID"] for t in stack.tasks("medsam")} - gone
        if stopping:
            gone |= stopping
            replaced_mid_job += len(stopping) * (client.get(job.id).state == "running")
        time.sleep(0.5)
    rolled = time.monotonic() - started
    final = wait_done(client, job)
    running = stack.running("medsam")
    figure(
        f"rolling update (start-first, one at a time): {rolled:.1f} s; replicas replaced while the job ran: "
        f"{replaced_mid_job}/{len(old)}; job of {count} items: {final.done} done, {final.failed} failed"
    )
    check_medvqa(stack.deployment, final, count)
    assert replaced_mid_job >= 1, "no replica was replaced while the job ran: size it larger"
    assert len(running) == 2 and not old & {t["ID"] for t in running}
    assert all(f"MODELYARD_TEST_ROLL={marker}" in t["Spec"]["ContainerSpec"].get("Env", []) for t in running)


def test_an_unhealthy_replica_is_replaced_by_swarm_and_the_job_fails_no_item(stack: Stack) -> None:
    count = items_for(40)
    client, job = submit_and_wait_mid_way(stack, count)
    victim = stack.running("medsam")[0]
    # The server process frozen (SIGSTOP): it still holds its port, but its healthcheck times out.
    stack.container(victim).exec_run(["python", "-c", server_signal_script("SIGSTOP")])
    frozen = time.monotonic()
    while (task := stack.task("medsam", victim["ID"]))["DesiredState"] == "running":
        assert time.monotonic() - frozen < 120, "swarm did not act on the unhealthy replica within 120 s"
        time.sleep(0.2)
    noticed = time.monotonic() - frozen
    back = stack.wait_replicas("medsam", 2, without={victim["ID"]})
    task = stack.task("medsam", victim["ID"])  # its end, as swarm recorded it
    final = wait_done(client, job)
    figure(
        f"unhealthy: swarm shut the frozen replica down after {noticed:.1f} s ({task['Status'].get('Err', '')}), "
        f"two healthy again {noticed + back:.1f} s after; final: {final.done}/{count} done, {final.failed} failed"
    )
    assert "unhealthy" in task["Status"].get("Err", "") or "unhealthy" in str(task["Status"]), task["Status"]
    check_medvqa(stack.deployment, final, count)


def test_removing_the_stack_and_leaving_the_swarm_leaves_nothing_behind(stack: Stack, swarm: Swarm) -> None:
    started = time.monotonic()
    stack.remove()
    for kind in ("services", "networks", "configs", "secrets", "containers", "volumes"):
        assert stack.labelled(kind) == [], f"{kind} of the stack left behind"
    swarm.leave()
    figure(f"stack rm + swarm leave: {time.monotonic() - started:.1f} s")
    after = swarm.inventory()
    if swarm.created:
        assert not swarm.active()
    for kind in after:
        assert after[kind] == swarm.before[kind], f"{kind}: before {swarm.before[kind]}, after {after[kind]}"
