"""OpenAI chat completions in and out: pure functions between the wire format and OcrRequest/OcrResult.

DeepSeek-OCR answers one image with one prompt, so a chat request must hold exactly one image part
(a data URL, or a path under --allow-files); its user text parts, in order, are the prompt, with
`<image>` where the image part stood. System messages are ignored. Only greedy decoding exists:
a temperature other than 0 (or n > 1) is refused rather than silently ignored.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from ..preprocess import Mode
from ..prompts import IMAGE_TAG
from ..requests import OcrRequest, OcrResult
from .images import BadInput, Limits, image_from_url, mode_named

# finish reasons as OpenAI names them; the engine's own goes along in "dsocr_finish_reason"
FINISH = {"eos": "stop", "length": "length", "repetition": "length", "cancelled": "stop"}


@dataclass
class ChatCall:
    request: OcrRequest
    max_tokens: int
    stream: bool
    include_usage: bool
    model: str


def parse_chat(body: dict, limits: Limits, default_mode: Mode, max_tokens: int, model: str) -> ChatCall:
    """The OcrRequest a chat completion body asks for; BadInput says why not."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
        raise BadInput("'messages' must be a non-empty list")
    temperature = body.get("temperature")
    if temperature not in (None, 0, 0.0):
        raise BadInput(f"temperature {temperature!r}: this server decodes greedily; use temperature 0 (or leave it out)")
    if body.get("n") not in (None, 1):
        raise BadInput("n must be 1 (greedy decoding gives one answer)")
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is None:
        limit = max_tokens
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= max_tokens:
        raise BadInput(f"max_tokens must be a whole number from 1 to {max_tokens} (this server's limit)")
    mode = mode_named(body.get("mode"), default_mode)
    image, prompt = _image_and_prompt(body["messages"], limits)
    stream_options = body.get("stream_options") or {}
    return ChatCall(OcrRequest(image, prompt, mode, max_new_tokens=limit), limit, bool(body.get("stream")),
                    bool(stream_options.get("include_usage")) if isinstance(stream_options, dict) else False,
                    body.get("model") or model)


def _image_and_prompt(messages: list, limits: Limits):
    images, parts = [], []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant", "developer"):
            raise BadInput("each message needs a role (user, system) and content")
        if message["role"] in ("system", "developer"):
            continue
        if message["role"] == "assistant":
            raise BadInput("one turn only: DeepSeek-OCR answers one image and prompt, not a conversation")
        content = message.get("content")
        for part in [{"type": "text", "text": content}] if isinstance(content, str) else content or []:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif kind == "image_url":
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                if not isinstance(url, str):
                    raise BadInput("an image_url part needs a url")
                images.append(image_from_url(url, limits))
                parts.append(IMAGE_TAG)
            else:
                raise BadInput(f"unsupported content part {kind!r} (use text and image_url)")
    if len(images) != 1:
        raise BadInput(f"a request holds exactly one image (this one has {len(images)})")
    return images[0], "\n".join(parts)


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(result: OcrResult) -> dict:
    generated = len(result.token_ids)
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": generated,
            "total_tokens": result.prompt_tokens + generated}


def completion(call: ChatCall, result: OcrResult, cid: str) -> dict:
    choice = {"index": 0, "message": {"role": "assistant", "content": result.text},
              "finish_reason": FINISH.get(result.finish_reason, "stop"), "logprobs": None,
              "dsocr_finish_reason": result.finish_reason}
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": call.model,
            "choices": [choice], "usage": usage(result)}


def chunk(call: ChatCall, cid: str, delta: dict, finish: OcrResult | None = None) -> dict:
    choice = {"index": 0, "delta": delta, "logprobs": None,
              "finish_reason": FINISH.get(finish.finish_reason, "stop") if finish else None}
    if finish is not None:
        choice["dsocr_finish_reason"] = finish.finish_reason
    return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": call.model,
            "choices": [choice]}


def usage_chunk(call: ChatCall, cid: str, result: OcrResult) -> dict:
    return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": call.model,
            "choices": [], "usage": usage(result)}


def error_body(message: str, code: str = "invalid_request", kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "code": code, "param": None}}
