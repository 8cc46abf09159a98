"""The runtime under fuzz, through its reference service (echo): any Tensor, any delay, fault or output region."""

from __future__ import annotations

import grpc
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from modelyard.runtime.arrays import tensor_to_numpy
from modelyard.v1 import echo_pb2, echo_pb2_grpc, types_pb2
from tests.fuzz import strategies as fz
from tests.fuzz.conftest import SHM
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
    back = tensor_to_numpy(response.array, SHM)
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes() == array.tobytes()  # bit for bit, NaNs included


@given(probe=fz.region_names(()), token=st.binary(max_size=32))
@fuzz(25)
def test_info_answers_any_shared_memory_probe_cleanly(echo: Target, regions: list[str], probe: str, token) -> None:
    request = types_pb2.InfoRequest(shared_memory_probe=probe, shared_memory_token=token)
    info = echo.call(echo_pb2_grpc.EchoStub(echo.channel).Info, request)
    assert not isinstance(info, grpc.RpcError) and not info.shared_memory_ok  # none of these is the caller's region
