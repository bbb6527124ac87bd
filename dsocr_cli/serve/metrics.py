"""GET /metrics in the Prometheus text format: what the server has done and what it holds now."""
from __future__ import annotations

import time
from collections import Counter

from .scheduler import Scheduler


def prometheus_text(scheduler: Scheduler, responses: Counter) -> str:
    c = scheduler.counters
    rows = [
        ("dsocr_requests_submitted_total", "counter", "Pages submitted to the engine (one per OCR request, one per converted page)", c.submitted),
        ("dsocr_pages_total", "counter", "Pages the engine has finished (errors and cancellations included)", c.pages),
        ("dsocr_page_errors_total", "counter", "Pages that could not be run (unreadable image, prompt too long)", c.errors),
        ("dsocr_cancelled_total", "counter", "Requests cancelled because their client went away", c.cancelled),
        ("dsocr_generated_tokens_total", "counter", "Tokens generated", c.tokens),
        ("dsocr_tokens_per_second", "gauge", "Generated tokens per second over the last 10 s", scheduler.tokens_per_s()),
        ("dsocr_queue_depth", "gauge", "Requests waiting for the engine", scheduler.queued()),
        ("dsocr_running_pages", "gauge", "Pages handed to the engine and not finished", len(scheduler.running)),
        ("dsocr_decode_steps_total", "counter", "Decode steps run", c.steps),
        ("dsocr_decode_rows_total", "counter", "Rows over all decode steps (divided by steps: the mean batch)", c.step_rows),
        ("dsocr_batch_rows_max", "gauge", "The most pages one decode step held", c.max_rows),
        ("dsocr_uptime_seconds", "gauge", "Seconds since the engine started", time.monotonic() - c.started),
    ]
    lines = []
    for name, kind, help_text, value in rows:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}"]
    lines += ["# HELP dsocr_http_responses_total HTTP responses by endpoint and status",
              "# TYPE dsocr_http_responses_total counter"]
    for (endpoint, status), count in sorted(responses.items()):
        lines.append(f'dsocr_http_responses_total{{endpoint="{endpoint}",status="{status}"}} {count}')
    return "\n".join(lines) + "\n"
