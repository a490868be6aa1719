"""Parse `/box` commands from comment bodies with a strict grammar.

A command is the first line that starts with `/box` (up to three spaces of
indent, any case) and that GitHub shows as ordinary text: not in a block quote
(nor a line it lazily continues), a code block or span, or HTML. Only the
sub-command word selects what happens; any other text is passed on as
instructions and never chooses a repository, installation, budget or model.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from bot.github.markdown import plain_lines
from bot.github.text import normalize

INSTRUCTIONS_LIMIT = 8_000
UNKNOWN_WORD_LIMIT = 40
CUT_NOTE = f"[The instructions were cut to their first {INSTRUCTIONS_LIMIT:,} characters.]"

COMMAND_LINE = re.compile(r" {0,3}/box(?=\s|$)(.*)", re.I)

HELP_TEXT = """\
**box-bot commands**

Write one of these at the start of a line in a comment on an issue or pull request, on a \
line of a pull request's diff (the answer comes in its review thread), or in a review:

- `/box fix [instructions]`: start work on this issue or pull request, or send more \
instructions to the box that is already working on it. Text after `fix`, including the \
following lines, goes to the agent.
- `/box status`: show the state of the current run.
- `/box stop`: interrupt the current work. The box stays available for follow-ups.
- `/box archive`: stop the box and archive it.
- `/box resume`: resume an archived box.
- `/box help`: show this list.

Adding the `{label}` label also starts a run. The label name can be changed in the \
repository's `.github/box.yml`.

Only people with write, maintain or admin permission on this repository can use these commands."""

UNKNOWN_PREFIX = "I don't know the command `/box {word}`.\n\n"


class CommandName(enum.Enum):
    """The sub-commands of `/box`."""

    FIX = "fix"
    STATUS = "status"
    STOP = "stop"
    ARCHIVE = "archive"
    RESUME = "resume"
    HELP = "help"


@dataclass(frozen=True)
class Command:
    """A parsed command; `unknown` holds a sub-command word that was not recognised."""

    name: CommandName
    instructions: str = ""
    unknown: str | None = None


def parse_command(body: str) -> Command | None:
    """Return the first command in a comment *body*, or None when it has none."""
    lines = normalize(body).split("\n")
    for index, text in plain_lines(lines):
        if COMMAND_LINE.match(text):
            rest = lines[index].lstrip(" \t")[len("/box") :]
            return _command(rest, lines[index + 1 :])
    return None


def help_text(label: str, unknown: str | None = None) -> str:
    """Return the help text for trigger label *label*, opening with *unknown* when set."""
    text = HELP_TEXT.format(label=label.replace("`", ""))
    if unknown is None:
        return text
    return UNKNOWN_PREFIX.format(word=unknown.replace("`", "")) + text


def _command(rest: str, following: list[str]) -> Command:
    """Build the command from the text after `/box` and the lines after it."""
    parts = rest.split(maxsplit=1)
    if not parts:
        return Command(CommandName.HELP)
    word = parts[0].lower()
    try:
        name = CommandName(word)
    except ValueError:
        return Command(CommandName.HELP, unknown=parts[0][:UNKNOWN_WORD_LIMIT])
    if name is not CommandName.FIX:
        return Command(name)
    tail = parts[1] if len(parts) > 1 else ""
    return Command(name, instructions=_bounded("\n".join([tail, *following]).strip()))


def _bounded(instructions: str) -> str:
    """Cut *instructions* to INSTRUCTIONS_LIMIT characters, saying so when cut."""
    if len(instructions) <= INSTRUCTIONS_LIMIT:
        return instructions
    return instructions[:INSTRUCTIONS_LIMIT].rstrip() + "\n\n" + CUT_NOTE
