"""What people see of a comment: it rendered by GitHub's Markdown engine, read back as a tree.

GitHub renders comments with cmark-gfm and its extensions (tables, autolinks, tag filter),
turning every line break into a hard break, and passes raw HTML on to its sanitiser, which
keeps `<details>` and `<summary>`; `cmarkgfm` is that engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

import cmarkgfm
from cmarkgfm.cmark import Options

GITHUB_OPTIONS = Options.CMARK_OPT_HARDBREAKS | Options.CMARK_OPT_UNSAFE
VOID_TAGS = frozenset({"br", "hr", "img", "input"})
CODE_TAGS = frozenset({"code", "pre"})
# Markdown that shows as typed when the engine did not take it as markup.
RAW_MARKDOWN = re.compile(r"\*\*|\]\(|`|^#{1,6} |^\s*[-*] ", re.M)


@dataclass
class Node:
    """An HTML element and what it holds (elements and text, in order)."""

    tag: str
    attrs: dict[str, str | None] = field(default_factory=dict)
    children: list[Node | str] = field(default_factory=list)
    parent: Node | None = field(default=None, repr=False)

    @property
    def text(self) -> str:
        """All the text inside, as a reader sees it (a line break as a newline)."""
        return "".join(c.text if isinstance(c, Node) else c for c in self.children) + (
            "\n" if self.tag == "br" else ""
        )

    def find(self, *tags: str) -> list[Node]:
        """Every element below with one of *tags*, in document order."""
        found: list[Node] = []
        for child in self.children:
            if isinstance(child, Node):
                if child.tag in tags:
                    found.append(child)
                found.extend(child.find(*tags))
        return found

    def within(self, *tags: str) -> bool:
        """Whether some element above this one has one of *tags*."""
        node = self.parent
        while node is not None:
            if node.tag in tags:
                return True
            node = node.parent
        return False

    @property
    def blocks(self) -> list[Node]:
        """The elements directly inside (blocks, for the root or a `<details>`)."""
        return [child for child in self.children if isinstance(child, Node)]


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("root")
        self.current = self.root
        self.comments: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs), parent=self.current)
        self.current.children.append(node)
        if tag not in VOID_TAGS:
            self.current = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.current.children.append(Node(tag, dict(attrs), parent=self.current))

    def handle_endtag(self, tag: str) -> None:
        node: Node | None = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is None:
            raise AssertionError(f"</{tag}> closes nothing that is open")
        assert node.parent is not None
        self.current = node.parent

    def handle_data(self, data: str) -> None:
        self.current.children.append(data)

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)


@dataclass
class Seen:
    """A comment as GitHub shows it."""

    markdown: str
    html: str
    root: Node
    comments: list[str]

    def headings(self) -> list[tuple[int, str]]:
        """(level, text) of every heading outside quotes, in order."""
        tags = ("h1", "h2", "h3", "h4", "h5", "h6")
        return [
            (int(h.tag[1]), h.text.strip())
            for h in self.root.find(*tags)
            if not h.within("blockquote")
        ]

    def links(self) -> list[str]:
        """The targets of every live link."""
        return [str(a.attrs.get("href")) for a in self.root.find("a")]

    def details(self) -> list[Node]:
        return self.root.find("details")

    def paragraphs(self) -> list[str]:
        return [p.text.strip() for p in self.root.find("p")]

    def leaked_markdown(self) -> list[str]:
        """Text outside code that still shows Markdown syntax."""
        leaks: list[str] = []
        for text in _texts(self.root):
            leaks += RAW_MARKDOWN.findall(text)
        return leaks


def _texts(node: Node) -> list[str]:
    """The text pieces outside code, each the run of text between two elements."""
    if node.tag in CODE_TAGS:
        return []
    out: list[str] = []
    for child in node.children:
        out += _texts(child) if isinstance(child, Node) else [child]
    return out


def seen(markdown: str) -> Seen:
    """Render *markdown* the way GitHub renders a comment, and read it back."""
    html = cmarkgfm.github_flavored_markdown_to_html(markdown, options=GITHUB_OPTIONS)
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    if builder.current is not builder.root:
        raise AssertionError(f"<{builder.current.tag}> is never closed")
    return Seen(markdown, html, builder.root, builder.comments)
