"""`dsocr serve` for real: a server process on a free loopback port with the tiny model, real clients
(the openai package among them), the CLI's --server runs compared byte for byte with local runs."""
import base64
import io
import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image, ImageDraw

from conftest import outputs_of
from test_convert import make_pdf

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CAP = 600           # the server's token limit: long enough for the drain test's stream
STARTUP_S = 180     # bounded wait for the server (a loaded 2-core machine imports torch slowly)


def page_png(text: str, size=(320, 240)) -> bytes:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((20, 20), text, fill="black")
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def chat_body(png: bytes, max_tokens: int, **extra) -> dict:
    content = [{"type": "image_url", "image_url": {"url": data_url(png)}}, {"type": "text", "text": "Free OCR."}]
    return {"model": "dsocr", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, **extra}


def start_server(checkpoint, *args: str) -> tuple[subprocess.Popen, str]:
    """The server on a port it picks, once /health answers; its URL is read from its first line."""
    proc = subprocess.Popen([sys.executable, "-m", "dsocr_cli", "serve", "--model", str(checkpoint), "--device", "cpu",
                             "--port", "0", "--mode", "tiny", "--max-new-tokens", str(CAP), *args],
                            stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()
    deadline = time.monotonic() + STARTUP_S
    url = None
    while url is None:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            proc.kill()
            pytest.fail("the server did not start in time")
        if " on http://" in line:
            url = line.split(" on ")[1].split()[0]
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", headers=AUTH, timeout=5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail("the server never answered /health")


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    allowed = tmp_path_factory.mktemp("allowed")
    (allowed / "page.png").write_bytes(page_png("allowed file"))
    proc, url = start_server(tiny_checkpoint, "--api-key", KEY, "--max-body-mb", "1", "--allow-files", str(allowed))
    yield url, proc, allowed
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)


def metrics(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", headers=AUTH, timeout=30).text
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line and not line.startswith("#")}


def chat(url: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=120)


def test_the_openai_client_gets_completions_and_streams(server):
    import openai

    url, _, _ = server
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY)
    assert [m.id for m in client.models.list().data]
    body = chat_body(page_png("Hello dsocr"), 12)
    whole = client.chat.completions.create(model="dsocr", messages=body["messages"], max_tokens=12, temperature=0)
    assert whole.choices[0].finish_reason in ("stop", "length") and whole.usage.completion_tokens <= 12
    assert whole.usage.prompt_tokens == 73 + 5 and whole.choices[0].message.content
    chunks = list(client.chat.completions.create(model="dsocr", messages=body["messages"], max_tokens=12,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_concurrent_clients_are_decoded_together_and_each_gets_its_own_answer(server):
    url, _, _ = server
    pages = [page_png(f"page {i}", (300 + 40 * i, 260)) for i in range(4)]
    alone = [chat(url, chat_body(png, 30)).json()["choices"][0]["message"]["content"] for png in pages]
    before = metrics(url)
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda i: chat(url, chat_body(pages[i % 4], 30)), range(12)))
    assert all(a.status_code == 200 for a in answers)
    assert [a.json()["choices"][0]["message"]["content"] for a in answers] == [alone[i % 4] for i in range(12)]
    after = metrics(url)
    assert after["dsocr_batch_rows_max"] >= 2
    steps = after["dsocr_decode_steps_total"] - before["dsocr_decode_steps_total"]
    rows = after["dsocr_decode_rows_total"] - before["dsocr_decode_rows_total"]
    assert rows / steps > 1.5  # 12 pages of 30 tokens shared their decode steps
    assert after["dsocr_pages_total"] - before["dsocr_pages_total"] == 12


def test_ocr_and_convert_through_the_server_match_a_local_run(server, tiny_checkpoint, tmp_path, dsocr, monkeypatch):
    url, _, _ = server
    for i in range(2):
        (tmp_path / f"p{i}.png").write_bytes(page_png(f"image {i}", (360 + 80 * i, 300)))
    make_pdf(tmp_path / "doc.pdf", 2)
    images = [tmp_path / "p0.png", tmp_path / "p1.png"]
    common = ("--mode", "tiny", "--max-new-tokens", "8")
    local = dsocr("ocr", *images, "--model", tiny_checkpoint, "--device", "cpu", "--json", *common)
    monkeypatch.setenv("DSOCR_API_KEY", KEY)
    remote = dsocr("ocr", *images, "--server", url, "--json", *common)
    assert remote.code == local.code == 0 and remote.stdout == local.stdout and remote.stderr == local.stderr
    inputs = [tmp_path / "doc.pdf", images[0]]
    args = ("convert", *inputs, "--json", "--keep-raw", "-q", *common)
    assert dsocr(*args, "-o", f"{tmp_path}/local/", "--model", tiny_checkpoint, "--device", "cpu").code == 1
    monkeypatch.setenv("DSOCR_SERVER", url)  # pages stop at 8 tokens: incomplete (exit 1), retried on the server
    assert dsocr(*args, "-o", f"{tmp_path}/remote/").code == 1
    assert outputs_of(tmp_path / "remote") == outputs_of(tmp_path / "local")


def test_convert_endpoint_returns_markdown_layout_and_finish_reasons(server, tiny_checkpoint, tmp_path, dsocr):
    url, _, _ = server
    make_pdf(tmp_path / "doc.pdf", 2)
    with open(tmp_path / "doc.pdf", "rb") as pdf:
        answer = httpx.post(f"{url}/v1/convert", headers=AUTH, timeout=120, files={"file": ("doc.pdf", pdf)},
                            data={"mode": "tiny", "max_new_tokens": "8"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [p["page"] for p in body["pages"]] == [1, 2]
    assert all(p["finish_reason"] in ("eos", "length", "repetition") for p in body["pages"])
    dsocr("convert", tmp_path / "doc.pdf", "-o", f"{tmp_path}/out/", "--json", "-q", "--mode", "tiny",
          "--max-new-tokens", "8", "--model", tiny_checkpoint, "--device", "cpu")
    assert body["markdown"] == (tmp_path / "out" / "doc.md").read_text(encoding="utf-8")
    assert body["layout"] == json.loads((tmp_path / "out" / "doc_layout.json").read_text(encoding="utf-8"))


def test_requests_without_the_key_are_refused(server):
    url, _, _ = server
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        for method, path in (("GET", "/health"), ("GET", "/v1/models"), ("POST", "/v1/chat/completions")):
            answer = httpx.request(method, f"{url}{path}", headers=headers, timeout=30)
            assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_api_key"


def test_limits_and_bad_requests_are_clear_4xx_and_harm_no_other_request(server):
    url, _, allowed = server
    good_png = page_png("good page")
    reference = chat(url, chat_body(good_png, 40)).json()["choices"][0]["message"]["content"]
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=chat_body(good_png, 40, stream=True),
                      headers=AUTH, timeout=120) as good:
        events = (line[6:] for line in good.iter_lines() if line.startswith("data: "))
        deltas = [json.loads(next(events))["choices"][0]["delta"].get("content", "")]  # the good page runs
        bad = chat(url, {"model": "dsocr", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(b"not an image at all")}}]}]})
        assert bad.status_code == 400 and "not an image" in bad.json()["error"]["message"]
        deltas += [json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events if e != "[DONE]"
                   and json.loads(e)["choices"]]
    assert "".join(deltas) == reference
    big = b"x" * (2 * 1024 ** 2)
    assert httpx.post(f"{url}/v1/chat/completions", content=big, headers=AUTH, timeout=30).status_code == 413
    chunked = httpx.post(f"{url}/v1/chat/completions", content=iter([big[:600_000], big[600_000:]]), headers=AUTH, timeout=30)
    assert chunked.status_code == 413 and "MiB limit" in chunked.json()["error"]["message"]
    hot = chat(url, chat_body(good_png, 4, temperature=0.7))
    assert hot.status_code == 400 and "temperature" in hot.json()["error"]["message"]
    assert chat(url, chat_body(good_png, CAP + 1)).status_code == 400
    by_path = lambda path: {"model": "dsocr", "max_tokens": 2, "messages": [{"role": "user", "content": [  # noqa: E731
        {"type": "image_url", "image_url": {"url": path}}, {"type": "text", "text": "Free OCR."}]}]}
    assert chat(url, by_path(f"file://{allowed / 'page.png'}")).status_code == 200
    assert chat(url, by_path(str(allowed / ".." / "elsewhere.png"))).status_code == 403
    assert chat(url, by_path("https://example.com/page.png")).status_code == 400
    for options in ({"prompt": "x", "ngram_window": 0}, {"prompt": "x", "mode": ["tiny"]}, {"mode": "tiny"}):
        odd = httpx.post(f"{url}/v1/dsocr/ocr", headers=AUTH, timeout=30, data={"options": json.dumps(options)},
                         files={"image": ("p.png", good_png, "image/png")})
        assert odd.status_code == 400 and odd.json()["error"]["message"]
    with open(__file__, "rb") as not_a_document:
        odd = httpx.post(f"{url}/v1/convert", headers=AUTH, timeout=30, files={"file": ("..", not_a_document)},
                         data={"pages": "3-1"})
    assert odd.status_code == 400 and "pages" in odd.json()["error"]["message"]


def wait_for(condition, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_leaves_cancels_its_request(server, stream):
    url, _, _ = server
    before = metrics(url)["dsocr_cancelled_total"]
    body = chat_body(page_png("leaving"), CAP, stream=stream)
    if stream:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=60) as answer:
            assert next(line for line in answer.iter_lines() if line.startswith("data: ")).startswith("data: {")
    else:
        host, port = url.removeprefix("http://").split(":")
        payload = json.dumps(body).encode()
        with socket.create_connection((host, int(port)), timeout=60) as conn:  # a client that hangs up unanswered
            conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Length: "
                         + str(len(payload)).encode() + b"\r\n\r\n" + payload)
            assert wait_for(lambda: metrics(url)["dsocr_running_pages"] >= 1)
    assert wait_for(lambda: metrics(url)["dsocr_cancelled_total"] == before + 1)
    assert wait_for(lambda: metrics(url)["dsocr_running_pages"] == 0)  # freed, not run to the end


def test_a_client_that_hangs_up_mid_upload_is_no_server_error(server):
    url, _, _ = server
    host, port = url.removeprefix("http://").split(":")
    gone, failed = (f'dsocr_http_responses_total{{endpoint="/v1/dsocr/ocr",status="{s}"}}' for s in (499, 500))
    before = metrics(url)
    with socket.create_connection((host, int(port)), timeout=60) as conn:  # promises 100 kB, sends 200 bytes
        conn.sendall(b"POST /v1/dsocr/ocr HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
                     + b"\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
                     + b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"p.png\"\r\n\r\n" + b"x" * 100)
    assert wait_for(lambda: metrics(url).get(gone, 0) == before.get(gone, 0) + 1)
    assert metrics(url).get(failed, 0) == before.get(failed, 0)


def test_bench_against_the_server(server, dsocr, monkeypatch):
    url, _, _ = server
    monkeypatch.setenv("DSOCR_API_KEY", KEY)
    out = dsocr("bench", "--server", url, "--clients", "4", "--pages", "6", "--output-tokens", "5", "--mode", "tiny", "--json")
    report = json.loads(out.stdout)
    assert out.code == 0 and report["pages"] == 6 and report["errors"] == 0 and report["pages_per_s"] > 0
    assert report["output_tokens_per_s"] * report["wall_s"] == pytest.approx(30)  # EOS ignored: 5 tokens each


def test_streamed_ocr_through_the_server_writes_what_a_local_run_does(server, tiny_checkpoint, tmp_path, monkeypatch):
    """One image to a terminal streams its text as it comes (on_token): the remote runner streams too."""
    from dsocr_cli.cli.batch import Batch, ModelChoice
    from dsocr_cli.cli.common import ModeName

    url, _, _ = server
    monkeypatch.setenv("DSOCR_API_KEY", KEY)
    (tmp_path / "p.png").write_bytes(page_png("streamed"))
    streams = {}
    for where in ("local", "remote"):
        choice = ModelChoice(str(tiny_checkpoint), "cpu", "auto", ModeName.tiny, 12, server=url if where == "remote" else None)
        pieces: list[str] = []
        batch = Batch([str(tmp_path / "p.png")], None, None, ".txt")
        batch.read("<image>\nFree OCR.", choice, on_text=pieces.append)
        streams[where] = (pieces, batch.readings[0].raw)
    assert streams["remote"] == streams["local"] and streams["local"][0]


@pytest.mark.parametrize("command", [("parse-chart", "--json"), ("parse-chart", "--csv"), ("parse-chem", "--json"),
                                     ("describe",), ("describe", "--json"), ("locate", "Total")])
def test_every_per_image_command_through_the_server_matches_a_local_run(server, tiny_checkpoint, tmp_path, dsocr,
                                                                          monkeypatch, command):
    url, _, _ = server
    for i in range(2):
        (tmp_path / f"p{i}.png").write_bytes(page_png(f"figure {i}", (300 + 60 * i, 280)))
    images = [tmp_path / "p0.png", tmp_path / "p1.png"]
    name, *extra = command
    common = ("--mode", "tiny", "--max-new-tokens", "8")
    local = dsocr(name, *images, *extra, "--model", tiny_checkpoint, "--device", "cpu", *common)
    monkeypatch.setenv("DSOCR_API_KEY", KEY)
    monkeypatch.setenv("DSOCR_SERVER", url)
    remote = dsocr(name, *images, *extra, *common)
    assert (remote.code, remote.stdout, remote.stderr) == (local.code, local.stdout, local.stderr)


def test_the_remote_client_imports_no_torch(server, tmp_path, monkeypatch):
    from test_start import imported_by

    url, _, _ = server
    monkeypatch.setenv("DSOCR_API_KEY", KEY)
    (tmp_path / "p.png").write_bytes(page_png("no torch here"))
    code, heavy, err = imported_by("ocr", tmp_path / "p.png", "--server", url, "--mode", "tiny", "--max-new-tokens", "4",
                                   "--json")
    assert code == 0 and "torch" not in heavy and "fastapi" not in heavy, (heavy, err)
    code, heavy, err = imported_by("convert", tmp_path / "p.png", "-o", tmp_path / "p.md", "--server", url, "--mode",
                                   "tiny", "--max-new-tokens", "4", "-q")
    assert code in (0, 1) and (tmp_path / "p.md").is_file() and "torch" not in heavy, (heavy, err)


def test_v_through_the_server_splits_the_call_into_import_and_work(server, tmp_path, dsocr, monkeypatch):
    url, _, _ = server
    monkeypatch.setenv("DSOCR_API_KEY", KEY)
    (tmp_path / "p.png").write_bytes(page_png("timed"))
    args = ("ocr", tmp_path / "p.png", "--server", url, "--mode", "tiny", "--max-new-tokens", "4")
    plain, timed = dsocr(*args), dsocr(*args, "-v")
    assert timed.code == plain.code and timed.stdout == plain.stdout
    assert re.search(r"^dsocr: import \d+\.\d\d s, work \d+\.\d\d s$", timed.stderr, re.M), timed.stderr


def test_sigterm_lets_requests_in_flight_finish_then_exits(server):
    """Last in this module: it stops the shared server."""
    url, proc, _ = server
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=chat_body(page_png("draining"), 120, stream=True),
                      headers=AUTH, timeout=120) as answer:
        lines = answer.iter_lines()
        assert next(line for line in lines if line.startswith("data: ")).startswith("data: {")
        proc.send_signal(signal.SIGTERM)
        rest = [line for line in lines if line.startswith("data: ")]
    assert rest[-1] == "data: [DONE]"
    final = json.loads(rest[-2][6:])
    assert final["choices"][0]["finish_reason"] in ("stop", "length")
    assert proc.wait(60) == 0
