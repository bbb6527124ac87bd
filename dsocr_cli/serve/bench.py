"""`dsocr bench --server URL`: pages/s of a running server under many concurrent clients.

The same synthetic pages and prompt as `dsocr bench`, each generating exactly `output_tokens`
tokens (EOS ignored: the request asks for it), sent as PNG to /v1/dsocr/ocr by `clients` client
threads at once, so the figure compares with `dsocr bench` on the same GPU. Pages are drawn and
encoded before the clock starts (a few distinct ones, reused: the engine caches nothing), and one
page goes first, untimed, to warm the server up.
"""
from __future__ import annotations

import io
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from ..synthetic import synthetic_page
from ..errors import DsocrError
from ..preprocess import Mode
from ..prompts import load_prompt
from .client import ThreadClients, request_once_more_if_dropped

DISTINCT_PAGES = 16


def _png(seed: int) -> bytes:
    out = io.BytesIO()
    synthetic_page(seed).save(out, "PNG", compress_level=1)
    return out.getvalue()


def _metrics(http: httpx.Client) -> dict[str, float]:
    lines = http.get("/metrics").text.splitlines()
    return {line.split()[0]: float(line.split()[1]) for line in lines if line and not line.startswith("#")}


def run_server_bench(url: str, api_key: str | None, mode: Mode, pages: int, output_tokens: int, clients: int) -> dict:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    connections = ThreadClients(base_url=url.rstrip("/"), headers=headers, timeout=httpx.Timeout(None, connect=30))
    options = json.dumps({"prompt": load_prompt("document"), "mode": mode.name, "max_new_tokens": output_tokens,
                          "ignore_eos": True})
    with ThreadPoolExecutor(DISTINCT_PAGES) as pool:
        images = list(pool.map(_png, range(DISTINCT_PAGES)))

    def one(i: int) -> tuple[float, dict]:
        start = time.perf_counter()
        answer = request_once_more_if_dropped(connections.get(), "POST", "/v1/dsocr/ocr", data={"options": options},
                                              files={"image": ("page.png", images[i % len(images)], "image/png")})
        if answer.status_code != 200:
            raise DsocrError(f"the server answered {answer.status_code}: {answer.text[:200]}")
        return time.perf_counter() - start, answer.json()

    try:
        one(0)  # warm-up: the server's preprocessing workers start, the guard's decode steps are captured
        before = _metrics(connections.get())
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            done = list(pool.map(one, range(pages)))
        wall = time.perf_counter() - start
        after = _metrics(connections.get())
    except httpx.HTTPError as exc:
        raise DsocrError(f"cannot reach the dsocr server at {url}: {exc}") from None
    finally:
        connections.close()
    latencies = sorted(seconds for seconds, _ in done)
    steps = after["dsocr_decode_steps_total"] - before["dsocr_decode_steps_total"]
    return {"mode": mode.name, "pages": pages, "clients": clients, "output_tokens_per_page": output_tokens,
            "pages_per_s": pages / wall, "output_tokens_per_s": sum(len(r["token_ids"]) for _, r in done) / wall,
            "wall_s": wall, "latency_s": {"median": statistics.median(latencies),
                                          "p90": latencies[int(0.9 * (len(latencies) - 1))]},
            "mean_batch": (after["dsocr_decode_rows_total"] - before["dsocr_decode_rows_total"]) / max(steps, 1),
            "peak_batch": after["dsocr_batch_rows_max"], "errors": sum(1 for _, r in done if r["error"]),
            "server": url}
