"""Find the lines of a comment that GitHub shows as ordinary text, outside quotes and code.

A line scanner for the parts of CommonMark's block structure that decide this
(https://spec.commonmark.org/0.31.2/): block quotes and their lazy continuation lines,
list items, fenced and indented code, HTML blocks, and, inside paragraphs, the code
spans and raw HTML (comments, tags) that can run over several lines. It classifies
lines and renders nothing. Where it is unsure it errs towards "not plain".
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

TAB_STOP = 4
CODE_INDENT = 4
# Deeper quotes and lists than this are read as text that holds no command.
MAX_NESTING = 50

QUOTE_MARKER = re.compile(r" {0,3}> ?")
LIST_MARKER = re.compile(r" {0,3}(?:[-+*]|(\d{1,9})[.)])(?= |$)")
FENCE_OPEN = re.compile(r" {0,3}(`{3,}(?=[^`]*$)|~{3,})")
ATX_HEADING = re.compile(r" {0,3}#{1,6}(?: |$)")
THEMATIC_BREAK = re.compile(r" {0,3}(?:(?:\* *){3,}|(?:- *){3,}|(?:_ *){3,})$")
SETEXT_UNDERLINE = re.compile(r" {0,3}(?:=+|-+) *$")

_TAG_NAME = r"[A-Za-z][A-Za-z0-9-]*"
_ATTRIBUTE = r"""\s+[A-Za-z_:][A-Za-z0-9_.:-]*(?:\s*=\s*(?:[^\s"'=<>`]+|'[^']*'|"[^"]*"))?"""
OPEN_TAG = rf"<{_TAG_NAME}(?:{_ATTRIBUTE})*\s*/?>"
CLOSING_TAG = rf"</{_TAG_NAME}\s*>"
INLINE_TAG = re.compile(rf"{OPEN_TAG}|{CLOSING_TAG}")
BLOCK_TAGS = (
    "address|article|aside|base|basefont|blockquote|body|caption|center|col|colgroup|dd|"
    "details|dialog|dir|div|dl|dt|fieldset|figcaption|figure|footer|form|frame|frameset|"
    "h1|h2|h3|h4|h5|h6|head|header|hr|html|iframe|legend|li|link|main|menu|menuitem|nav|"
    "noframes|ol|optgroup|option|p|param|search|section|summary|table|tbody|td|tfoot|th|"
    "thead|title|tr|track|ul"
)
# Inline constructs that run from an opening string to the first closing string.
DELIMITED_INLINE = (("<!-->", ""), ("<!--->", ""), ("<!--", "-->"), ("<?", "?>"))
DECLARATION_OPEN = re.compile(r"<!(?:\[CDATA\[|[A-Za-z])")
INLINE_SPECIAL = re.compile(r"[\\`<]")
BACKTICKS = re.compile(r"`+")
RAW_HTML_OPENER = re.compile(r"<(?:(?P<comment>!--)|(?P<bogus>[!?]|/(?![A-Za-z]))|/?[A-Za-z])")
RAW_HTML_CLOSERS = {"<!--": "-->", "<!": ">"}
QUOTED_OR_COMMENT = ("<!--", "<'", '<"')
TAG_END_OR_QUOTE = re.compile(r"[>'\"]")


@dataclass(frozen=True)
class HtmlBlock:
    """One of CommonMark's seven kinds of HTML block (section 4.6)."""

    start: re.Pattern[str]
    end: re.Pattern[str] | None  # None: the block ends at a blank line
    interrupts_paragraph: bool = True


HTML_BLOCKS = (
    HtmlBlock(
        re.compile(r" {0,3}<(?:pre|script|style|textarea)(?:[ >]|$)", re.I),
        re.compile(r"</(?:pre|script|style|textarea)>", re.I),
    ),
    HtmlBlock(re.compile(r" {0,3}<!--"), re.compile(r"-->")),
    HtmlBlock(re.compile(r" {0,3}<\?"), re.compile(r"\?>")),
    HtmlBlock(re.compile(r" {0,3}<![A-Za-z]"), re.compile(r">")),
    HtmlBlock(re.compile(r" {0,3}<!\[CDATA\["), re.compile(r"\]\]>")),
    HtmlBlock(re.compile(rf" {{0,3}}</?(?:{BLOCK_TAGS})(?:[ >]|/>|$)", re.I), None),
    HtmlBlock(re.compile(rf" {{0,3}}(?:{OPEN_TAG}|{CLOSING_TAG}) *$"), None, False),
)


@dataclass
class _Container:
    """An open block quote, or a list item with its content indent."""

    item_indent: int | None = None  # None: a block quote
    empty: bool = True  # a list item with nothing in it yet

    @property
    def quote(self) -> bool:
        return self.item_indent is None


@dataclass(frozen=True)
class _Line:
    """A paragraph line: its index, its text inside its containers, whether it may be plain."""

    index: int
    text: str
    plain: bool


@dataclass
class _Scanner:
    """The open containers and leaf block while reading a document line by line."""

    containers: list[_Container] = field(default_factory=list)
    paragraph: list[_Line] = field(default_factory=list)
    fence: str | None = None
    html: HtmlBlock | None = None
    indented_code: bool = False
    # Where HTML blocks left the HTML tokenizer: a comment or a tag they leave open hides
    # all that follows on GitHub.
    raw_html: str = ""

    def feed(self, index: int, raw: str) -> Iterator[tuple[int, str]]:
        """Read one line; yield the plain lines of any paragraph it ends."""
        matched, rest = self._continue_containers(raw.expandtabs(TAB_STOP))
        if matched < len(self.containers):
            if self.paragraph and _continues_paragraph(rest):
                self.paragraph.append(_Line(index, rest, self._plain(marked=False)))
                return
            yield from self.close_leaf()
            del self.containers[matched:]
        if self._verbatim(rest):
            return
        depth = len(self.containers)
        rest = self._open_containers(rest)
        if len(self.containers) > depth:
            yield from self._close_paragraph()
        if rest.strip():
            for container in self.containers:
                container.empty = False
        yield from self._leaf_line(index, rest, marked=len(self.containers) > depth)

    def close_leaf(self) -> Iterator[tuple[int, str]]:
        """End the open leaf block; yield the plain lines if it was a paragraph."""
        self.fence, self.html, self.indented_code = None, None, False
        yield from self._close_paragraph()

    def _continue_containers(self, line: str) -> tuple[int, str]:
        """Return how many open containers *line* continues, and the text inside them."""
        rest = line
        for depth, container in enumerate(self.containers):
            if container.item_indent is None:
                marker = QUOTE_MARKER.match(rest)
                if marker is None:
                    return depth, rest
                rest = rest[marker.end() :]
            elif _indent(rest) >= container.item_indent:
                rest = rest[container.item_indent :]
            elif not rest.strip() and not container.empty:
                rest = ""
            else:
                return depth, rest
        return len(self.containers), rest

    def _verbatim(self, rest: str) -> bool:
        """Consume *rest* if it belongs to open code or HTML; say whether it did."""
        if self.fence is not None:
            if _closes_fence(rest, self.fence):
                self.fence = None
            return True
        if self.html is not None:
            self.raw_html = _raw_html_state(rest, self.raw_html)
            end = self.html.end
            if (end is None and not rest.strip()) or (end is not None and end.search(rest)):
                self.html = None
            return True
        if self.indented_code:
            if not rest.strip() or _indent(rest) >= CODE_INDENT:
                return True
            self.indented_code = False
        return False

    def _open_containers(self, rest: str) -> str:
        """Open the block quotes and list items that start *rest*; return the text inside."""
        in_paragraph = bool(self.paragraph)
        while _indent(rest) < CODE_INDENT and len(self.containers) < MAX_NESTING:
            if quote := QUOTE_MARKER.match(rest):
                self.containers.append(_Container())
                rest = rest[quote.end() :]
                in_paragraph = False
                continue
            item = LIST_MARKER.match(rest)
            if item is None or THEMATIC_BREAK.match(rest):
                break
            if in_paragraph and (SETEXT_UNDERLINE.match(rest) or not _interrupting_list_item(rest)):
                break
            in_paragraph = False
            content = _item_content_indent(rest, item.end())
            self.containers.append(_Container(content))
            rest = rest[content:] if rest[item.end() :].strip() else ""
        return rest

    def _leaf_line(self, index: int, rest: str, *, marked: bool) -> Iterator[tuple[int, str]]:
        """Place *rest* in a leaf block: HTML, code, a heading, a break or a paragraph."""
        if not rest.strip():
            yield from self._close_paragraph()
        elif html := _html_block_start(rest, in_paragraph=bool(self.paragraph)):
            yield from self._close_paragraph()
            self.raw_html = _raw_html_state(rest, self.raw_html)
            self.html = html if html.end is None or not html.end.search(rest) else None
        else:
            # GitHub's HTML for what follows starts with a tag, whose `>` ends a tag or a
            # bogus comment that raw HTML left open.
            self.raw_html = self.raw_html if self.raw_html in QUOTED_OR_COMMENT else ""
            yield from self._rendered_leaf_line(index, rest, marked=marked)

    def _rendered_leaf_line(
        self, index: int, rest: str, *, marked: bool
    ) -> Iterator[tuple[int, str]]:
        """Place non-blank *rest* in code, a heading, a break or a paragraph."""
        if _indent(rest) >= CODE_INDENT:
            if self.paragraph:
                self.paragraph.append(_Line(index, rest, False))
            else:
                self.indented_code = True
        elif opening := FENCE_OPEN.match(rest):
            yield from self._close_paragraph()
            self.fence = opening.group(1)
        elif (
            ATX_HEADING.match(rest)
            or THEMATIC_BREAK.match(rest)
            or (self.paragraph and SETEXT_UNDERLINE.match(rest))
        ):
            yield from self._close_paragraph()
        else:
            self.paragraph.append(_Line(index, rest, self._plain(marked=marked)))

    def _close_paragraph(self) -> Iterator[tuple[int, str]]:
        lines, self.paragraph = self.paragraph, []
        if any(line.plain for line in lines):
            yield from _outside_inline_spans(lines)

    def _plain(self, *, marked: bool) -> bool:
        """Tell whether a paragraph line may be plain: no marker, no quote, no open raw HTML."""
        quoted = any(container.quote for container in self.containers)
        return not (marked or quoted or self.raw_html)


def plain_lines(lines: list[str]) -> Iterator[tuple[int, str]]:
    """Yield (index, text) for paragraph lines outside quotes, code and HTML, in order.

    The text is the line inside its list items. A line that opens a list item or a
    quote is not yielded, nor one that starts inside a code span or raw HTML.
    """
    scanner = _Scanner()
    for index, line in enumerate(lines):
        yield from scanner.feed(index, line)
    yield from scanner.close_leaf()


def _indent(text: str) -> int:
    return len(text) - len(text.lstrip(" "))


def _closes_fence(line: str, fence: str) -> bool:
    """Tell whether *line* closes a code fence opened by *fence* (CommonMark 4.5)."""
    stripped = line.strip()
    return _indent(line) <= 3 and len(stripped) >= len(fence) and set(stripped) == {fence[0]}


def _item_content_indent(rest: str, marker_end: int) -> int:
    """Return the column where a list item's content starts (CommonMark 5.2)."""
    after = rest[marker_end:]
    spaces = _indent(after)
    if not after.strip() or spaces > CODE_INDENT:
        return marker_end + 1
    return marker_end + spaces


def _interrupting_list_item(text: str) -> bool:
    """Tell whether *text* starts a list item that may interrupt a paragraph."""
    item = LIST_MARKER.match(text)
    if item is None or not text[item.end() :].strip():
        return False
    return item.group(1) is None or int(item.group(1)) == 1


def _raw_html_state(raw_html: str, state: str) -> str:
    """Return where an HTML tokenizer stands after *raw_html*, starting from *state*.

    "" is text, "<!--" a comment, "<!" a bogus comment (`<?`, `<!x`), "<" a tag, and
    "<'" or '<"' a quoted value in a tag.
    """
    pos = 0
    while True:
        if not state:
            opener = RAW_HTML_OPENER.search(raw_html, pos)
            if opener is None:
                return ""
            state, pos = _opened(opener)
        elif state == "<":
            step = TAG_END_OR_QUOTE.search(raw_html, pos)
            if step is None:
                return state
            state, pos = ("" if step.group() == ">" else "<" + step.group()), step.end()
        else:
            closing = RAW_HTML_CLOSERS.get(state, state[-1])
            end = raw_html.find(closing, pos)
            if end < 0:
                return state
            state, pos = ("" if state in RAW_HTML_CLOSERS else "<"), end + len(closing)


def _opened(opener: re.Match[str]) -> tuple[str, int]:
    """Return the state an HTML opener starts and where to read on."""
    if opener.group("comment"):
        # Searched from the opener's second character, so that `<!-->` closes at once.
        return "<!--", opener.start() + 2
    if opener.group("bogus"):
        return "<!", opener.end()
    return "<", opener.end()


def _html_block_start(text: str, *, in_paragraph: bool) -> HtmlBlock | None:
    for block in HTML_BLOCKS:
        if block.start.match(text) and (block.interrupts_paragraph or not in_paragraph):
            return block
    return None


def _continues_paragraph(text: str) -> bool:
    """Tell whether *text* is a lazy continuation of an open paragraph (CommonMark 5.1).

    It is when it opens no block where the containers it did not continue end; there the
    paragraph is not open, so any list item and any HTML block can start.
    """
    if not text.strip():
        return False
    if _indent(text) >= CODE_INDENT:
        return True
    starts_block = (
        QUOTE_MARKER.match(text)
        or LIST_MARKER.match(text)
        or FENCE_OPEN.match(text)
        or ATX_HEADING.match(text)
        or THEMATIC_BREAK.match(text)
        or _html_block_start(text, in_paragraph=False)
    )
    return not starts_block


def _outside_inline_spans(lines: list[_Line]) -> Iterator[tuple[int, str]]:
    """Yield the plain lines of a paragraph that do not start inside a code span or raw HTML."""
    texts = [line.text.lstrip(" ") for line in lines]
    text = "\n".join(texts)
    spans = iter(_InlineSpans(text))
    span = next(spans, None)
    offset = 0
    for line, stripped in zip(lines, texts, strict=True):
        while span is not None and span[1] <= offset:
            span = next(spans, None)
        inside = span is not None and span[0] < offset < span[1]
        if line.plain and not inside:
            yield line.index, line.text
        offset += len(stripped) + 1


class _InlineSpans:
    """The code spans and raw HTML of a paragraph, as (start, end) offsets, in order."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.unclosed: set[str] = set()
        self.runs: dict[int, list[int]] = {}
        for run in BACKTICKS.finditer(text):
            self.runs.setdefault(len(run.group()), []).append(run.start())

    def __iter__(self) -> Iterator[tuple[int, int]]:
        pos = 0
        while special := INLINE_SPECIAL.search(self.text, pos):
            start = special.start()
            if special.group() == "\\":
                pos = start + 2
                continue
            end, pos = self._span_end(start)
            if end is not None:
                yield start, end
                pos = end

    def _span_end(self, start: int) -> tuple[int | None, int]:
        """Return where a span opened at *start* ends (None: no span) and where to go on."""
        if self.text[start] == "`":
            run = BACKTICKS.match(self.text, start)
            assert run is not None
            return self._code_span_end(run.end(), run.end() - start), run.end()
        return self._raw_html_end(start), start + 1

    def _code_span_end(self, after: int, length: int) -> int | None:
        """Return the end of the first backtick run of exactly *length* from *after*."""
        starts = self.runs.get(length, [])
        at = bisect.bisect_left(starts, after)
        return starts[at] + length if at < len(starts) else None

    def _raw_html_end(self, start: int) -> int | None:
        for opening, closing in DELIMITED_INLINE:
            if not self.text.startswith(opening, start):
                continue
            after = start + len(opening)
            return self._find(closing, after) if closing else after
        if declaration := DECLARATION_OPEN.match(self.text, start):
            closing = "]]>" if declaration.group().endswith("[") else ">"
            return self._find(closing, declaration.end())
        tag = INLINE_TAG.match(self.text, start)
        return tag.end() if tag else None

    def _find(self, closing: str, start: int) -> int | None:
        """Return the end of the first *closing* from *start*; remember when there is none."""
        if closing in self.unclosed:
            return None
        found = self.text.find(closing, start)
        if found < 0:
            self.unclosed.add(closing)
            return None
        return found + len(closing)
