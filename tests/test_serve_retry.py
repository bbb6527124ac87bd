"""A request whose connection closes before any answer is sent once more, and only once."""
from __future__ import annotations

import httpx
import pytest

from dsocr_cli.serve.client import request_once_more_if_dropped


def client_dropping(times: int) -> tuple[httpx.Client, list]:
    calls = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) <= times:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        return httpx.Response(200, json={"ok": True})

    return httpx.Client(transport=httpx.MockTransport(answer), base_url="http://server"), calls


def test_a_dropped_connection_is_tried_once_more():
    http, calls = client_dropping(1)
    assert request_once_more_if_dropped(http, "POST", "/v1/dsocr/ocr", data={"a": "b"}).json() == {"ok": True}
    assert calls == ["/v1/dsocr/ocr", "/v1/dsocr/ocr"]


def test_a_second_drop_is_the_callers_error():
    http, calls = client_dropping(2)
    with pytest.raises(httpx.RemoteProtocolError):
        request_once_more_if_dropped(http, "GET", "/health")
    assert len(calls) == 2
