"""The runtime under fuzz, through its reference service (echo): any Tensor, any delay, fault or output region."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelyard.runtime.arrays import SHM_DIR, tensor_to_numpy
from modelyard.v1 import echo_pb2, echo_pb2_grpc, types_pb2
from tests.fuzz import strategies as fz
from tests.fuzz.conftest import HOSTILE_REGIONS, REGION_TARGET
from tests.fuzz.support import Target, fuzz

GOOD_ARRAYS = fz.arrays(st.lists(st.integers(0, 6), max_size=4).map(tuple))


@given(data=st.data())
@fuzz(60)
def test_echo_answers_any_tensor_delay_and_output_region_cleanly(echo: Target, regions: list[str], data) -> None:
    request = echo_pb2.EchoRequest(
        array=data.draw(fz.tensors(GOOD_ARRAYS, regions)),
        delay_seconds=data.draw(st.one_of(st.just(0.0), fz.floats)),
        fault=data.draw(fz.enum_values),
    )
    if data.draw(st.booleans()):
        request.output_region.CopyFrom(data.draw(fz.output_regions(regions)))
    echo.call(echo_pb2_grpc.EchoStub(echo.channel).Echo, request)


@given(array=GOOD_ARRAYS)
@fuzz(30)
def test_a_well_formed_array_comes_back_unchanged(echo: Target, array: np.ndarray) -> None:
    request = echo_pb2.EchoRequest(array=fz.inline(array))
    response = echo.call(echo_pb2_grpc.EchoStub(echo.channel).Echo, request)
    assert not isinstance(response, grpc.RpcError), response.details()
    back = tensor_to_numpy(response.array, SHM_DIR)
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes() == array.tobytes()  # bit for bit, NaNs included


@given(probe=fz.region_names(()), token=st.binary(max_size=32))
@fuzz(25)
def test_info_answers_any_shared_memory_probe_cleanly(echo: Target, regions: list[str], probe: str, token) -> None:
    request = types_pb2.InfoRequest(shared_memory_probe=probe, shared_memory_token=token)
    info = echo.call(echo_pb2_grpc.EchoStub(echo.channel).Info, request)
    assert not isinstance(info, grpc.RpcError) and not info.shared_memory_ok  # none of these is the caller's region


@pytest.mark.parametrize("index", range(len(HOSTILE_REGIONS)))
def test_a_region_that_is_a_link_or_a_fifo_is_refused_as_input_output_and_probe(
    echo: Target, regions: list[str], index: int
) -> None:
    name = HOSTILE_REGIONS[index]
    stub = echo_pb2_grpc.EchoStub(echo.channel)
    shared = types_pb2.Tensor(shared=types_pb2.SharedArray(region=name, dtype="uint8", shape=[16]))
    as_output = echo_pb2.EchoRequest(array=fz.inline(np.arange(16, dtype=np.uint8)))
    as_output.output_region.region = name
    for request in (echo_pb2.EchoRequest(array=shared), as_output):
        answer = echo.call(stub.Echo, request)
        assert isinstance(answer, grpc.RpcError) and answer.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "symbolic link" in answer.details() or "not a regular file" in answer.details()
    probe = types_pb2.InfoRequest(shared_memory_probe=name, shared_memory_token=REGION_TARGET[:16])
    assert not echo.call(stub.Info, probe).shared_memory_ok
