"""Every model service under concurrent fuzz: bursts of good and bad requests at once, so that they share queues
and batches (BiomedCLIP and MedSAM batch the items of concurrent calls). Each call still gets a clean answer of its
own, and every service stays up."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from modelyard.v1 import biomedclip_pb2, medsam_pb2, medsam_pb2_grpc
from tests.fuzz import test_fuzz_biomedclip as clip
from tests.fuzz import test_fuzz_medsam as sam
from tests.fuzz import test_fuzz_tapip3d as tracks
from tests.fuzz import test_fuzz_wilor as hands
from tests.fuzz.support import Target, fuzz


def calls(services: dict[str, Target], regions: list[str]) -> st.SearchStrategy[tuple[str, str, Any]]:
    """(service, rpc, request) of any of the model services."""
    prompted = st.builds(biomedclip_pb2.PromptedImage, image=clip.images(regions), prompt=clip.prompts)
    return st.one_of(
        st.tuples(st.just("biomedclip"), st.just("Localize"), st.builds(
            biomedclip_pb2.LocalizeRequest, items=clip.some(prompted), cam=clip.cam_options,
            options=clip.localize_options())),
        st.tuples(st.just("biomedclip"), st.just("EmbedImages"), st.builds(
            biomedclip_pb2.EmbedImagesRequest, images=clip.some(clip.images(regions)))),
        st.tuples(st.just("medsam"), st.just("Segment"), st.builds(
            medsam_pb2.SegmentRequest, items=st.lists(st.one_of(sam.segment_items(regions), sam.sized_items()),
                                                      min_size=1, max_size=3))),
        st.tuples(st.just("tapip3d"), st.just("Track"), tracks.track_requests(regions)),
        st.tuples(st.just("wilor"), st.just("Detect"), hands.detect_requests(regions)),
    )  # fmt: skip


def stubs(services: dict[str, Target]) -> dict[str, Any]:
    return {
        "biomedclip": clip.stub(services["biomedclip"]),
        "medsam": medsam_pb2_grpc.MedSAMStub(services["medsam"].channel),
        "tapip3d": tracks.stub(services["tapip3d"]),
        "wilor": hands.stub(services["wilor"]),
    }


@given(data=st.data())
@fuzz(6)
def test_bursts_of_concurrent_requests_are_each_answered_cleanly(
    biomedclip: Target, medsam: Target, tapip3d: Target, wilor: Target, regions: list[str], data
) -> None:
    services = {"biomedclip": biomedclip, "medsam": medsam, "tapip3d": tapip3d, "wilor": wilor}
    burst = data.draw(st.lists(calls(services, regions), min_size=8, max_size=16))
    by_name = stubs(services)

    def send(call: tuple[str, str, Any]) -> Any:
        name, rpc, request = call
        return services[name].call(getattr(by_name[name], rpc), request, timeout=60)

    with ThreadPoolExecutor(len(burst)) as pool:
        list(pool.map(send, burst))  # each answer is checked (clean status, server up) in Target.call
