"""The gateway under fuzz, over the real model services: every RPC with any pipeline, input and output paths,
options, config text and job ids. Jobs that start run against the services (gold boxes -> MedSAM, BiomedCLIP
boxes, TAPIP3D + WiLoR) and end done or failed; none may take the gateway or a service down."""

from __future__ import annotations

import time

import grpc
from hypothesis import given
from hypothesis import strategies as st

from modelyard.v1 import gateway_pb2 as pb
from modelyard.v1 import gateway_pb2_grpc
from tests.fuzz import strategies as fz
from tests.fuzz.conftest import GOOD_TABLES
from tests.fuzz.support import Target, fuzz

# Per pipeline: its inputs, its options with values good and bad, and the options every job starts from (gold
# boxes and two items keep medvqa jobs short).
INPUTS = {
    "medvqa": [*GOOD_TABLES, "medvqa/fifo.csv", "images/grey.png"],
    "hand3d": ["hand3d/clip.npz", "hand3d", "clips", ".", "fifo.npz", "dir.npz", "pickled.npz"],
}
OPTION_VALUES = {
    "medvqa": {
        "MODE": ["gold", "inference", "GOLD", ""], "STAGE": ["segmentation", "bbox", "heatmap", "crf"],
        "TOPK": ["8", "0", "-1", "1e9", "x"], "LIMIT": ["1", "0", "-1"], "CAM_VERSION": ["gScoreCAM", "GradCAM", "no"],
        "CAM_THRESHOLD": ["0.45", "nan", "inf", "2", ""], "BOX_COLOR": ["0,0,255", "1,2", "a,b,c", "999,0,0", ""],
        "SCENARIO": ["A", "B", "C", "D"], "GOLD_BOX_SPACE": ["224", "0", "nan"], "IMAGE_ROOT": ["", *fz.ODD_REFS[:16]],
        "PATH_COLUMN": ["image_path", "question", "nope"], "SEGMENT_ALL_BOXES": ["true", "false", "maybe"],
        "REGION_MODE": ["none", "explode", "composite", "join"],
        "DRAW_LABELS": ["true", "false"], "SAVE_RAW_CAM": ["true"], "ALPHA": ["0.5", "-1"],
    },
    "hand3d": {
        "GRID_SIZE": ["4", "0", "65", "1e3"], "FRAMES_PER_CALL": ["2", "0", "100"], "COMPRESSION": ["0", "9", "10"],
        "SKIP_VERTICES": ["true", "yes", "2"], "HAND_CONFIDENCE": ["0.3", "0", "nan"], "ITERATIONS": ["2", "-1"],
        "VISIBILITY_THRESHOLD": ["0.5", "1.5"], "RESOLUTION_FACTOR": ["1", "9", "-1"],
    },
}  # fmt: skip
BASE_OPTIONS = {"medvqa": {"MODE": "gold", "LIMIT": "2"}, "hand3d": {"GRID_SIZE": "4"}}
CONFIG_TEXTS = ["", 'MODE="gold"\nSTAGE="segmentation"\n', "export LIMIT=1 # one\n", "MODE: gold\nLIMIT: 1\n",
                "a: [", "- a list", "=", "KEY=", "x: {y: 1}", "\x00", "MODE=gold\nnot a line"]  # fmt: skip


def stub(target: Target) -> gateway_pb2_grpc.GatewayStub:
    return gateway_pb2_grpc.GatewayStub(target.channel)


@st.composite
def job_requests(draw: st.DrawFn) -> pb.JobRequest:
    pipeline = draw(fz.mostly(st.sampled_from(sorted(INPUTS)), fz.texts))
    values = OPTION_VALUES.get(pipeline, OPTION_VALUES["medvqa"])
    known = st.sampled_from(sorted(values)).flatmap(lambda k: st.tuples(st.just(k), st.sampled_from(values[k])))
    pairs = draw(st.lists(fz.mostly(known, st.tuples(fz.texts, fz.texts), weight=4), max_size=3))
    inputs = INPUTS.get(pipeline, INPUTS["medvqa"])
    return pb.JobRequest(
        pipeline=pipeline,
        input=draw(fz.mostly(st.sampled_from(inputs), fz.data_refs(inputs), weight=2)),
        output=draw(fz.mostly(st.integers(0, 3).map(lambda n: f"out/{n}"), fz.data_refs(["out", "images/grey.png"]))),
        options={**BASE_OPTIONS.get(pipeline, {}), **dict(pairs)},
        config_text=draw(fz.mostly(st.just(""), st.one_of(st.sampled_from(CONFIG_TEXTS), fz.texts), weight=2)),
    )


def job_ids(gateway: Target) -> st.SearchStrategy[str]:
    """Ids of jobs the gateway knows, and any other text."""
    listed = gateway.call(stub(gateway).ListJobs, pb.ListJobsRequest(limit=20))
    known = [j.id for j in listed.jobs] if not isinstance(listed, grpc.RpcError) else []
    return fz.mostly(st.sampled_from(known), fz.texts, weight=2) if known else fz.texts


def test_list_pipelines_names_both_pipelines(gateway: Target) -> None:
    response = gateway.call(stub(gateway).ListPipelines, pb.ListPipelinesRequest())
    assert {p.name for p in response.pipelines} == {"medvqa", "hand3d"}


@given(request=job_requests())
@fuzz(50)
def test_submit_job_answers_any_request_cleanly(gateway: Target, request: pb.JobRequest) -> None:
    job = gateway.call(stub(gateway).SubmitJob, request)
    if not isinstance(job, grpc.RpcError):
        assert job.id and job.total >= 1 and job.pipeline == request.pipeline


@given(request=job_requests())
@fuzz(25)
def test_run_pipeline_streams_any_job_to_its_end_cleanly(gateway: Target, request: pb.JobRequest) -> None:
    events = gateway.stream(stub(gateway).RunPipeline, request, timeout=120)
    if not isinstance(events, grpc.RpcError):
        assert events[-1].job.state in ("done", "failed", "cancelled")


@given(data=st.data())
@fuzz(25)
def test_get_cancel_and_watch_answer_any_job_id_cleanly(gateway: Target, data) -> None:
    job_id = data.draw(job_ids(gateway))
    for rpc in (stub(gateway).GetJob, stub(gateway).CancelJob):
        gateway.call(rpc, pb.GetJobRequest(id=job_id))
    gateway.stream(stub(gateway).WatchJob, pb.GetJobRequest(id=job_id), timeout=120)


@given(limit=fz.int32s)
@fuzz(25)
def test_list_jobs_answers_any_limit_cleanly(gateway: Target, limit: int) -> None:
    gateway.call(stub(gateway).ListJobs, pb.ListJobsRequest(limit=limit))


def test_after_the_fuzz_every_job_ends_and_a_gold_job_still_runs(gateway: Target) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        jobs = gateway.call(stub(gateway).ListJobs, pb.ListJobsRequest(limit=1000)).jobs
        if not [j for j in jobs if j.state in ("queued", "running")]:
            break
        time.sleep(0.5)
    assert all(j.state in ("done", "failed", "cancelled") for j in jobs), [j.state for j in jobs]
    request = pb.JobRequest(
        pipeline="medvqa", input="medvqa/questions.csv", output="out/final", options={"MODE": "gold"}
    )
    events = gateway.stream(stub(gateway).RunPipeline, request, timeout=120)
    assert events[-1].job.state == "done" and events[-1].job.done == 2
