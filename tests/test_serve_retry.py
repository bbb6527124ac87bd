"""Client connections: a request whose connection closes before any answer is sent once more, and
only once; each client thread has a connection of its own."""
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


def test_each_thread_gets_its_own_client_and_close_closes_them_all():
    """A pool shared by many threads can close a connection under a waiting request (httpcore#1110)."""
    from concurrent.futures import ThreadPoolExecutor
    import threading

    from dsocr_cli.serve.client import ThreadClients

    clients = ThreadClients(transport=httpx.MockTransport(lambda request: httpx.Response(200)), base_url="http://s")
    barrier = threading.Barrier(4)

    def two_gets(_):
        barrier.wait()  # four threads at once, so none reuses another's thread
        first = clients.get()
        assert first.get("/health").status_code == 200
        return first, clients.get()

    with ThreadPoolExecutor(4) as pool:
        pairs = list(pool.map(two_gets, range(4)))
    assert all(a is b for a, b in pairs) and len({id(a) for a, _ in pairs}) == 4
    clients.close()
    assert all(a.is_closed for a, _ in pairs)
