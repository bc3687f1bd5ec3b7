"""Untrusted text and references made safe to store, log and feed to a model.

Entry points:
- `valid_text(value, max_bytes=None)`: the text as given, but valid: lone UTF-16 surrogates become U+FFFD, NUL is
  removed, and a byte bound cuts on a character boundary. Whitespace is kept (storage is verbatim).
- `model_text(value)`: `valid_text` with whitespace runs (tabs, newlines, U+2028...) collapsed to one space, for
  model input only.
- `text_problem(value)`: why a user-supplied value is not valid text (None when it is), for validators that refuse.
- `redact_url(ref)` / `redact(text)`: credentials, query strings and fragments removed from URLs, and `data:` URLs
  shortened, so a reference can go into a log, a failure entry or an error message.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_SURROGATE = re.compile("[\ud800-\udfff]")
# scheme://[userinfo@]host[/path][?query][#fragment], as found inside free text (error messages).
_URL_IN_TEXT = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<userinfo>[^\s/?#@]*@)?(?P<host>[^\s/?#]*)"
    r"(?P<path>[^\s?#]*)(?P<query>\?[^\s#]*)?(?P<fragment>#\S*)?"
)
_DATA_URL = re.compile(r"data:(?P<type>[^,;\s]{0,64})[^,\s]*,(?P<payload>\S*)", re.IGNORECASE)
_TRAILING = ":,;.)]'\""
MAX_REF_CHARS = 300  # a reference quoted in a message (a data: URL can be megabytes)


def valid_text(value: str, max_bytes: int | None = None) -> str:
    """`value` made valid UTF-8 text (see the module docstring), at most `max_bytes` UTF-8 bytes when given."""
    text = value
    if _SURROGATE.search(text):
        # Rejoin any split pair (a valid astral character) first; only the lone halves become U+FFFD.
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    if "\x00" in text:
        text = text.replace("\x00", "")
    if max_bytes is not None:
        raw = text.encode("utf-8")
        if len(raw) > max_bytes:
            text = raw[:max_bytes].decode("utf-8", errors="ignore")
    return text


def model_text(value: str) -> str:
    """Valid text with whitespace normalised (str.split's notion, which covers U+2028 and friends)."""
    return " ".join(valid_text(value).split())


def text_problem(value: str) -> str | None:
    """Why `value` is not valid text to pass on (a lone surrogate or NUL), or None when it is fine."""
    bad = _SURROGATE.search(value)
    if bad is not None:
        return f"contains a lone UTF-16 surrogate (U+{ord(bad.group()):04X}) at position {bad.start()}"
    if "\x00" in value:
        return f"contains a NUL character at position {value.index(chr(0))}"
    return None


def _shorten(text: str, limit: int = MAX_REF_CHARS) -> str:
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def redact_url(ref: str) -> str:
    """A reference safe to log: no user:password@, no ?query, no #fragment; a data: URL becomes its media type."""
    ref = valid_text(str(ref))
    data = _DATA_URL.match(ref)
    if data:
        return f"data:{data.group('type')},<{len(data.group('payload'))} chars>"
    try:
        parts = urlsplit(ref)
    except ValueError:  # e.g. an unbalanced IPv6 bracket: fall back to the text scrubber
        return _shorten(redact(ref))
    if not parts.scheme or not parts.netloc:
        return _shorten(ref)
    host = parts.netloc.rpartition("@")[2]
    userinfo = "***@" if "@" in parts.netloc else ""
    query = "?***" if parts.query else ""
    fragment = "#***" if parts.fragment else ""
    return _shorten(f"{parts.scheme}://{userinfo}{host}{parts.path}{query}{fragment}")


def redact(text: str) -> str:
    """Free text (an error message) with every URL in it redacted as `redact_url` does."""

    def url(m: re.Match[str]) -> str:
        userinfo = "***@" if m.group("userinfo") else ""
        # Punctuation ending the URL belongs to the sentence ("...?sig=x: HTTP 404"): keep it.
        last = m.group("fragment") or m.group("query") or ""
        tail = last[len(last.rstrip(_TRAILING)) :] if len(last) > 1 else ""
        query = "?***" if m.group("query") else ""
        fragment = "#***" if m.group("fragment") else ""
        return f"{m.group('scheme')}://{userinfo}{m.group('host')}{m.group('path')}{query}{fragment}{tail}"

    def data(m: re.Match[str]) -> str:
        return f"data:{m.group('type')},<{len(m.group('payload'))} chars>"

    return _URL_IN_TEXT.sub(url, _DATA_URL.sub(data, valid_text(str(text))))


__all__ = ["MAX_REF_CHARS", "model_text", "redact", "redact_url", "text_problem", "valid_text"]
