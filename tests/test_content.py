"""Content handling: sanitizing, rendering, excerpts, slugs."""

from __future__ import annotations

import random

import pytest
from conftest import Client

from syndicate.content.text import (
    clean_text,
    excerpt,
    render_content,
    sanitize_html,
    sanitized_text,
    slugify,
    summarize,
)

XSS = (
    '<h2>Heading</h2><p onclick="steal()">Text<script>alert(1)</script></p>'
    '<a href="javascript:alert(1)">bad link</a><a href="https://example.org/x">good link</a>'
    '<img src="https://example.org/a.png" onerror="steal()" alt="pic">'
    "<ul><li>one</li></ul><ol><li>two</li></ol>"
    "<table><tr><th>h</th></tr><tr><td>d</td></tr></table>"
    '<iframe src="https://evil.example"></iframe><style>body{}</style>'
    '<svg onload="steal()"></svg><a href="JaVaScRiPt:alert(2)">x</a>'
)


def test_sanitize_removes_scripts_and_handlers_keeps_structure() -> None:
    out = render_content(XSS, "html")
    lowered = out.lower()
    for bad in (
        "<script",
        "onclick",
        "onerror",
        "onload",
        "javascript:",
        "<iframe",
        "<style",
        "alert(1)",
        "<svg",
    ):
        assert bad not in lowered, bad
    for good in (
        "<h2>Heading</h2>",
        "<ul><li>one</li></ul>",
        "<ol><li>two</li></ol>",
        "<table>",
        "<th>h</th>",
        "<td>d</td>",
        'href="https://example.org/x"',
        'src="https://example.org/a.png"',
        'alt="pic"',
    ):
        assert good in out, good


def test_markdown_is_rendered_then_sanitized() -> None:
    md = "# Title\n\nSome **bold** [link](https://example.org) and [x](javascript:alert(1))\n\n"
    md += "- a\n- b\n\n| h |\n|---|\n| d |\n\n<script>alert(1)</script>\n"
    out = render_content(md, "markdown")
    assert "<h1>Title</h1>" in out
    assert "<strong>bold</strong>" in out
    assert '<a href="https://example.org"' in out
    assert "<li>a</li>" in out and "<td>d</td>" in out
    assert 'href="javascript' not in out and "<script" not in out


def test_text_is_escaped_into_paragraphs() -> None:
    out = render_content("a < b & c\nsecond line\n\n<b>not bold</b>", "text")
    assert out == "<p>a &lt; b &amp; c<br>second line</p>\n<p>&lt;b&gt;not bold&lt;/b&gt;</p>"


def test_summary_is_a_plain_excerpt_on_a_word_boundary() -> None:
    html = "<h2>Intro</h2><p>" + " ".join(f"word{n}" for n in range(100)) + "</p>"
    summary = summarize(html)
    assert summary.startswith("Intro word0 word1")
    assert summary.endswith("…")
    assert 150 <= len(summary) <= 201
    body = summary.removesuffix("…")
    assert html.find(body.split()[-1]) != -1, "cut between words, not inside one"
    assert excerpt("short text") == "short text"


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("What does liver calcification mean?", "what-does-liver-calcification-mean"),
        ("  Crème brûlée: ½ the fat!  ", "creme-brulee-1-2-the-fat"),
        ("肝脏钙化是什么意思", "肝脏钙化是什么意思"),
        ("مرحبا بالعالم", "مرحبا-بالعالم"),
        ("?!", "article"),
        ("a_b__c", "a-b-c"),
    ],
)
def test_slugify(title: str, slug: str) -> None:
    assert slugify(title) == slug


def test_slugify_long_titles_cut_on_a_word() -> None:
    slug = slugify("word " * 40)
    assert len(slug) <= 80 and not slug.endswith("-") and slug.endswith("word")


def test_clean_text_drops_only_what_xml_cannot_carry() -> None:
    assert clean_text("a\x00b\x08c\x0bd\x1fe\ufffef\uffffg\ud800h") == "abcdefgh"
    assert clean_text("tab\tlf\ncr\r emoji 😀 rtl שלום") == "tab\tlf\ncr\r emoji 😀 rtl שלום"


async def test_api_stores_sanitized_content(client: Client) -> None:
    article = {
        "id": "xss",
        "title": "<script>alert(1)</script>Title",
        "content": XSS,
        "topics": ["t"],
    }
    async with client.request("POST", "/api/articles", json=article) as resp:
        assert resp.status == 201
    async with client.request("GET", "/api/articles/xss") as resp:
        body = await resp.json()
    assert "<script" not in body["content"] and "javascript:" not in body["content"]
    assert "<h2>Heading</h2>" in body["content"]
    assert "<script" not in body["summary"] and "Heading" in body["summary"]
    md = {"id": "md", "title": "M", "content": "**b**", "content_type": "markdown", "topics": ["t"]}
    async with client.request("POST", "/api/articles", json=md) as resp:
        body = await resp.json()
    assert body["content"].strip() == "<p><strong>b</strong></p>"
    assert body["content_type"] == "markdown"


def test_summary_reads_only_the_start_yet_equals_the_whole_texts_excerpt() -> None:
    # summarize() reads a prefix of long HTML; tags, entities and block gaps cut at
    # any point must give the same summary as the text of the whole document.
    rng = random.Random(7)
    pieces = [
        "liver",
        "calcification",
        "&amp;",
        "<b>bold</b>",
        "<p>",
        "</p>",
        "&lt;x&gt;",
        "é",
        "<br>",
        '<a href="http://x/?a=1&amp;b=2">link</a>',
        "  ",
        "\n",
        "<h2>Head</h2>",
        "&#233;",
        "肝脏",
    ]
    for _ in range(400):
        words = [rng.choice(pieces) for _ in range(rng.randint(0, 900))]
        html = sanitize_html(" ".join(words))
        assert summarize(html) == excerpt(sanitized_text(html))
