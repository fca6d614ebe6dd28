"""Text for Salesforce fields: HTML to plain text, measuring, truncating and splitting.

Salesforce is a Java platform: a field's ``length`` (from describe) counts UTF-16 code
units, so a character outside the Basic Multilingual Plane (most emoji) counts as 2.
``byteLength`` bounds the UTF-8 encoding. Everything here measures both ways, so a value
that fits here fits in Salesforce.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser


@dataclass(frozen=True, slots=True)
class FieldLimit:
    """A field's size limits from describe: ``length`` (UTF-16 units), optional ``byte_length``."""

    length: int
    byte_length: int | None = None


def sf_length(text: str) -> int:
    """Length as Salesforce counts it: UTF-16 code units."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def fits(text: str, limit: FieldLimit) -> bool:
    """Whether ``text`` fits the field."""
    return sf_length(text) <= limit.length and (
        limit.byte_length is None or len(text.encode("utf-8", "surrogatepass")) <= limit.byte_length
    )


def truncate(text: str, limit: FieldLimit) -> str:
    """The longest prefix of ``text`` that fits (cut between characters, never inside one)."""
    return text[: _fitting_end(text, 0, limit)]


def split_to_fit(text: str, limit: FieldLimit) -> list[str]:
    """Split ``text`` into parts that each fit; ``"".join(parts) == text`` always.

    A part ends just after the last line break in its second half, else after the last
    white space, else (one unbroken run) at the limit. Empty text gives one empty part.
    """
    if limit.length < 2 or (limit.byte_length is not None and limit.byte_length < 4):
        raise ValueError("a field must hold at least one character of any kind")
    parts = []
    start = 0
    while True:
        end = _fitting_end(text, start, limit)
        if end >= len(text):
            parts.append(text[start:])
            return parts
        end = _break_before(text, start, end)
        parts.append(text[start:end])
        start = end


def _fitting_end(text: str, start: int, limit: FieldLimit) -> int:
    """The largest ``end`` such that ``text[start:end]`` fits the limit."""
    # Each step drops the fewest characters that could remove the excess (a character is
    # at most 2 UTF-16 units and 4 UTF-8 bytes), so it never cuts more than needed.
    end = min(len(text), start + limit.length)
    while end > start:
        chunk = text[start:end]
        drop = _ceil_div(sf_length(chunk) - limit.length, 2)
        if limit.byte_length is not None:
            byte_excess = len(chunk.encode("utf-8", "surrogatepass")) - limit.byte_length
            drop = max(drop, _ceil_div(byte_excess, 4))
        if drop <= 0:
            return end
        end -= drop
    return start


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _break_before(text: str, start: int, end: int) -> int:
    """A nicer cut in ``text[start:end]``: after its last newline, else its last white space.

    Only the second half is searched, so every part but the last is at least half full
    and a body never needs more than about twice the minimum number of parts.
    """
    half = start + (end - start) // 2
    newline = text.rfind("\n", half, end)
    if newline >= 0:
        return newline + 1
    for position in range(end - 1, half - 1, -1):
        if text[position].isspace():
            return position + 1
    return end


# --- HTML to text ---------------------------------------------------------------------------

_BLOCK = frozenset(
    "address article aside blockquote center dd details dialog div dl dt fieldset figcaption "
    "figure footer form header hr main nav ol p pre section summary table tbody thead tfoot tr "
    "ul h1 h2 h3 h4 h5 h6".split()
)
_PARAGRAPH = frozenset("p h1 h2 h3 h4 h5 h6 blockquote pre table ul ol dl hr".split())
_SKIP = frozenset("script style head title noscript template svg".split())
_SPACE_RUN = re.compile(r"[ \t\r\n\f\v]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")


class _TextExtractor(HTMLParser):
    """Collects readable text: blocks as lines, lists as ``- `` / ``1. `` items, links as ``text (url)``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._pending_newlines = 0
        self._skip_depth = 0
        self._pre_depth = 0
        self._lists: list[list[int | None]] = []  # per open list: [next number] or [None]
        self._links: list[tuple[str | None, int]] = []  # (href, output index at <a>)
        self._cell_open = False

    # output helpers
    def _break(self, lines: int) -> None:
        if self.out:
            self._pending_newlines = max(self._pending_newlines, lines)

    def _emit(self, text: str) -> None:
        if not text:
            return
        if self._pending_newlines:
            self.out.append("\n" * self._pending_newlines)
            self._pending_newlines = 0
        self.out.append(text)

    def _ends_with_space(self) -> bool:
        return not self.out or self.out[-1][-1:] in (" ", "\n") or self._pending_newlines > 0

    # parser callbacks
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip_depth += 1
            return
        if self._skip_depth:
            return
        if tag == "br":
            if self.out:
                self._emit("\n")
            return
        if tag in ("td", "th"):
            if self._cell_open and not self._ends_with_space():
                self._emit(" ")
            self._cell_open = True
        if tag == "tr":
            self._cell_open = False
        if tag in _BLOCK:
            self._break(self._gap(tag))
        if tag == "pre":
            self._pre_depth += 1
        if tag in ("ul", "ol"):
            self._lists.append([1 if tag == "ol" else None])
        elif tag == "li":
            self._break(1)
            depth = max(len(self._lists), 1)
            counter = self._lists[-1] if self._lists else [None]
            marker = "- " if counter[0] is None else f"{counter[0]}. "
            if counter[0] is not None:
                counter[0] += 1
            self._emit("  " * (depth - 1) + marker)
        elif tag == "a":
            self._links.append((dict(attrs).get("href"), len(self.out)))

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip_depth = max(0, self._skip_depth - 1)
            return
        if self._skip_depth:
            return
        if tag == "pre":
            self._pre_depth = max(0, self._pre_depth - 1)
        if tag in ("ul", "ol") and self._lists:
            self._lists.pop()
        if tag == "a" and self._links:
            href, begin = self._links.pop()
            self._append_link_target(href, "".join(self.out[begin:]))
        if tag in _BLOCK or tag == "li":
            self._break(self._gap(tag))

    def _gap(self, tag: str) -> int:
        """A blank line around paragraphs, tables and outer lists; one line break otherwise.

        Called before a list is pushed and after it is popped, so ``self._lists`` holds
        only the enclosing lists: non-empty means the list is nested.
        """
        if tag not in _PARAGRAPH or (tag in ("ul", "ol") and self._lists):
            return 1
        return 2

    def _append_link_target(self, href: str | None, text: str) -> None:
        url = (href or "").strip()
        shown = url[7:] if url.lower().startswith("mailto:") else url
        if not url or url.startswith("#") or url.lower().startswith("javascript:"):
            return
        if not text.strip() or shown in text:
            return  # image-only links are layout noise; a link showing its own URL says it once
        self._emit(f" ({shown})")

    def handle_data(self, data: str) -> None:
        if self._skip_depth:
            return
        if self._pre_depth:
            self._emit(data)
            return
        # Non-breaking spaces are layout in HTML mail (Outlook writes <p>&nbsp;</p> for
        # blank lines); as plain text they are just spaces.
        text = _SPACE_RUN.sub(" ", data.replace("\xa0", " "))
        if text.startswith(" ") and self._ends_with_space():
            text = text[1:]
        self._emit(text)


def html_to_text(html: str) -> str:
    """Readable plain text of an HTML email body (entities unescaped, scripts/styles dropped)."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = "".join(parser.out)
    text = _TRAILING_SPACE.sub("\n", text)
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()
