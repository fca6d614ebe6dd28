"""Plain text for Salesforce fields (email_sync.rules.text): HTML, measuring, truncating, splitting."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from email_sync.rules.text import FieldLimit, fits, html_to_text, sf_length, split_to_fit, truncate


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<p>Hello</p><p>World</p>", "Hello\n\nWorld"),
        ("line1<br>line2<br/><br>line4", "line1\nline2\n\nline4"),
        ("<div>a</div><div>b</div>", "a\nb"),
        ("<h1>Title</h1>body", "Title\n\nbody"),
        ("Fish &amp; chips &lt;3 &eacute;t&eacute; &#8364;5&nbsp;now", "Fish & chips <3 été €5 now"),
        ("<p>Hi</p><p>&nbsp;</p><p>&nbsp;&nbsp;</p><p>Bye</p>", "Hi\n\nBye"),
        ("<p>  lots   of\n\n   space  </p>", "lots of space"),
        ('See <a href="https://x.example/a">the offer</a>.', "See the offer (https://x.example/a)."),
        ('<a href="https://x.example">https://x.example</a>', "https://x.example"),
        ('Mail <a href="mailto:bob@x.example">bob@x.example</a>', "Mail bob@x.example"),
        ('Mail <a href="mailto:bob@x.example">Bob</a>', "Mail Bob (bob@x.example)"),
        ('<a href="#top">top</a> <a href="javascript:x()">js</a>', "top js"),
        ('<a href="https://t.example"><img src="x.png"></a>after', "after"),
        ("<ul><li>one</li><li>two</li></ul>", "- one\n- two"),
        ("<ol><li>one</li><li>two</li></ol>", "1. one\n2. two"),
        ("<ul><li>a<ul><li>b</li></ul></li><li>c</li></ul>", "- a\n  - b\n- c"),
        ("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>", "a b\nc d"),
        ("<script>alert(1)</script><style>p{}</style>visible", "visible"),
        ("<html><head><title>t</title><meta charset=utf-8></head><body>b</body></html>", "b"),
        ("<!--[if mso]>outlook only<![endif]-->text", "text"),
        ("<pre>  keep\n    indent</pre>", "keep\n    indent"),
        ("", ""),
        ("<p>unclosed <b>bold", "unclosed bold"),
    ],
)
def test_html_to_text(html: str, text: str) -> None:
    assert html_to_text(html) == text


@pytest.mark.parametrize(("text", "units"), [("abc", 3), ("été", 3), ("😀", 2), ("a😀b", 4), ("", 0)])
def test_sf_length_counts_utf16_units(text: str, units: int) -> None:
    assert sf_length(text) == units


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [("abcdef", FieldLimit(4), "abcd"), ("ab😀cd", FieldLimit(3), "ab"), ("ab😀cd", FieldLimit(4), "ab😀"),
     ("ééé", FieldLimit(10, 4), "éé"), ("short", FieldLimit(40), "short"), ("😀", FieldLimit(1), "")],
)  # fmt: skip
def test_truncate(text: str, limit: FieldLimit, expected: str) -> None:
    assert truncate(text, limit) == expected


def test_split_prefers_line_breaks_then_spaces() -> None:
    assert split_to_fit("aaaa bbbb\ncc dd", FieldLimit(12)) == ["aaaa bbbb\n", "cc dd"]
    assert split_to_fit("aaaa bbbb cccc", FieldLimit(10)) == ["aaaa bbbb ", "cccc"]
    assert split_to_fit("x" * 25, FieldLimit(10)) == ["x" * 10, "x" * 10, "x" * 5]
    assert split_to_fit("", FieldLimit(10)) == [""]


def test_split_32000_description() -> None:
    body = ("word " * 20_000)[:-1]  # 99,999 characters
    parts = split_to_fit(body, FieldLimit(32_000))
    assert "".join(parts) == body
    assert len(parts) == 4
    assert all(len(p) <= 32_000 for p in parts)
    assert all(p.endswith(" ") for p in parts[:-1])


texts = st.lists(
    st.one_of(st.characters(codec="utf-8"), st.sampled_from([" ", "\n", "\r\n", "😀", "é", "word"])), max_size=300
).map("".join)
limits = st.builds(
    FieldLimit, st.integers(min_value=2, max_value=60), st.one_of(st.none(), st.integers(min_value=4, max_value=120))
)


@given(texts, limits)
@settings(max_examples=250, deadline=None)
def test_split_is_lossless_and_every_part_fits(text: str, limit: FieldLimit) -> None:
    parts = split_to_fit(text, limit)
    assert "".join(parts) == text
    assert all(fits(p, limit) for p in parts)
    assert all(p for p in parts) or parts == [""]
    # each part is as long as it can be, short of a nicer break in its second half
    for part, following in zip(parts, parts[1:], strict=False):
        assert not fits(part + following[0], limit) or part[-1].isspace()


@given(texts, limits)
def test_truncate_is_the_longest_fitting_prefix(text: str, limit: FieldLimit) -> None:
    cut = truncate(text, limit)
    assert text.startswith(cut) and fits(cut, limit)
    assert cut == text or not fits(text[: len(cut) + 1], limit)
