"""Links in model text made harmless: viewing the Markdown must never run code or fetch from the web.

The model transcribes what a page shows; a link or image it writes is data, not ours to make
live. Policy, for prose (code spans and fences are not links and stay verbatim):
- a link to http(s) or mailto stays a normal text link (a document's own references);
- a link with any other scheme (javascript:, data:, vbscript:, file:, ...) loses its `](`, so it
  shows as the text the model wrote: `[x\\](javascript:...)`; so does a reference definition;
- an image the model wrote (`![alt](url)`, remote or not) is shown as text: only the figures dsocr
  crops itself are images, so opening the Markdown fetches nothing.
Destinations are judged the way a renderer reads them: entities decoded, backslash escapes and
control characters removed, case ignored.
"""
from __future__ import annotations

import html
import re

SAFE_SCHEMES = frozenset({"http", "https", "mailto"})

_IMAGE = re.compile(r"(?<!\\)!\[")
_PLAIN_IMAGE = re.compile(r"(?<!\\)!\[([^\[\]\n]{0,999})\]\(")    # alt without brackets: its `](` goes too
_INLINE_DESTINATION = re.compile(r"(?<!\\)\]\(\s*(<[^<>\n]*>?|[^\s)]*)")
_REFERENCE = re.compile(r"^( {0,3})\[((?:[^\[\]\\\n]|\\.){0,999})\]:[ \t]*\n?[ \t]*(<[^<>\n]*>?|\S*)", re.M)
_SCHEME = re.compile(r"([a-z][a-z0-9+.-]*):")
_INVISIBLE = re.compile(r"[\x00-\x20\x7f\\]")


def defuse_links(text: str) -> str:
    """Prose with model-written images as text and links to unsafe schemes unlinked."""
    text = _IMAGE.sub(r"!\\[", _PLAIN_IMAGE.sub(r"!\\[\1\\](", text))
    text = _INLINE_DESTINATION.sub(lambda m: m.group(0) if is_safe_destination(m.group(1)) else "\\" + m.group(0), text)
    return _REFERENCE.sub(lambda m: m.group(0) if is_safe_destination(m.group(3)) else f"{m.group(1)}\\{m.group(0).lstrip(' ')}",
                          text)


def is_safe_destination(destination: str) -> bool:
    """No scheme (a relative link or #anchor), or http, https, mailto."""
    plain = _INVISIBLE.sub("", html.unescape(destination.strip("<>"))).lower()
    scheme = _SCHEME.match(plain)
    return scheme is None or scheme.group(1) in SAFE_SCHEMES
