"""Tests for `/box` command parsing and the help text."""

from __future__ import annotations

import pytest

from bot.github.commands import (
    CUT_NOTE,
    HELP_TEXT,
    INSTRUCTIONS_LIMIT,
    Command,
    CommandName,
    help_text,
    parse_command,
)

FIX = CommandName.FIX
HELP = CommandName.HELP


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("/box fix", Command(FIX)),
        ("/box status", Command(CommandName.STATUS)),
        ("/box stop", Command(CommandName.STOP)),
        ("/box archive", Command(CommandName.ARCHIVE)),
        ("/box resume", Command(CommandName.RESUME)),
        ("/box help", Command(HELP)),
        ("/box", Command(HELP)),
        ("/box   ", Command(HELP)),
        ("/BOX FIX", Command(FIX)),
        ("/Box Status", Command(CommandName.STATUS)),
        ("/box fix the flaky test", Command(FIX, "the flaky test")),
        ("/box status please", Command(CommandName.STATUS)),
        ("   /box stop", Command(CommandName.STOP)),
        ("/box\tfix tabs", Command(FIX, "tabs")),
        ("/box\u00a0fix", Command(FIX)),
        ("/box deploy", Command(HELP, unknown="deploy")),
        ("/box Deploy now", Command(HELP, unknown="Deploy")),
        ("/box fixit", Command(HELP, unknown="fixit")),
        ("/box --repo other/repo", Command(HELP, unknown="--repo")),
        ("Thanks!\n/box fix", Command(FIX)),
        ("/box fix\r\nline two\r\n", Command(FIX, "line two")),
    ],
)
def test_commands(body: str, expected: Command) -> None:
    assert parse_command(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        "",
        "Looks good to me.",
        "/boxes are great",
        "/boxfix",
        "/box-fix",
        "/box/fix",
        "/box.",
        "please /box fix this",
        "    /box fix",
        "\t/box fix",
        "> /box fix",
        "  > /box fix",
        ">> /box fix",
        "```\n/box fix\n```",
        "~~~~\n/box fix\n~~~~",
        "```python\n/box fix\n",
        "````\n```\n/box fix\n````",
        "~~~\n/box fix\n```\n",
        "<!--\n/box fix\n-->",
        "<!-- /box fix -->",
        "/box\u200bfix",
        "/box\u2060fix",
        "/box\u3164fix",
        "/box\u2800fix",
        "box fix",
        "\\/box fix",
    ],
)
def test_not_a_command(body: str) -> None:
    assert parse_command(body) is None


def test_command_after_closed_fence_counts() -> None:
    body = "```\n/box stop\n```\n/box status"
    assert parse_command(body) == Command(CommandName.STATUS)


def test_command_after_closed_html_comment_counts() -> None:
    body = "<!-- template\n/box stop\nend -->\n/box archive"
    assert parse_command(body) == Command(CommandName.ARCHIVE)


def test_backtick_line_with_backticks_in_info_is_not_a_fence() -> None:
    body = "```not `a` fence\n/box stop"
    assert parse_command(body) == Command(CommandName.STOP)


def test_only_first_command_counts() -> None:
    body = "/box status\n/box stop"
    assert parse_command(body) == Command(CommandName.STATUS)


def test_quoted_command_is_skipped_for_the_next_one() -> None:
    body = "> /box archive\n\nAgreed.\n/box stop"
    assert parse_command(body) == Command(CommandName.STOP)


def test_fix_takes_rest_of_line_and_following_lines() -> None:
    body = (
        "Some context first.\n"
        "/box fix Please handle the empty list case.\n"
        "Also:\n"
        "- keep the public API\n"
        "```py\nassert f([]) == 0\n```\n"
        "/box stop\n\n"
    )
    expected = (
        "Please handle the empty list case.\n"
        "Also:\n"
        "- keep the public API\n"
        "```py\nassert f([]) == 0\n```\n"
        "/box stop"
    )
    assert parse_command(body) == Command(FIX, expected)


def test_fix_instructions_can_start_on_next_line() -> None:
    assert parse_command("/box fix\n\n  Use the new parser.  \n") == Command(
        FIX, "Use the new parser."
    )


def test_invisible_characters_are_dropped_from_instructions() -> None:
    assert parse_command("/box fix ad\u200bd \u202etests") == Command(FIX, "add tests")


def test_long_instructions_are_cut_and_say_so() -> None:
    body = "/box fix " + "x" * (INSTRUCTIONS_LIMIT + 500)
    command = parse_command(body)
    assert command is not None
    assert command.instructions == "x" * INSTRUCTIONS_LIMIT + "\n\n" + CUT_NOTE
    assert "8,000" in CUT_NOTE


def test_instructions_at_the_limit_are_kept_whole() -> None:
    command = parse_command("/box fix " + "y" * INSTRUCTIONS_LIMIT)
    assert command == Command(FIX, "y" * INSTRUCTIONS_LIMIT)


def test_unknown_word_is_bounded() -> None:
    command = parse_command("/box " + "z" * 500)
    assert command == Command(HELP, unknown="z" * 40)


def test_help_text_lists_every_command_and_who_may_use_them() -> None:
    text = help_text("box:fix")
    for name in CommandName:
        assert f"`/box {name.value}" in text
    assert "`box:fix`" in text
    assert "write, maintain or admin permission" in text
    assert "{label}" in HELP_TEXT and "{label}" not in text


def test_help_text_uses_configured_label() -> None:
    assert "`agent:go`" in help_text("agent:go")


def test_help_text_for_unknown_word() -> None:
    text = help_text("box:fix", unknown="deploy")
    assert text.startswith("I don't know the command `/box deploy`.\n\n")
    assert text.endswith(help_text("box:fix"))


def test_help_text_keeps_unknown_word_inside_its_code_span() -> None:
    text = help_text("box:fix", unknown="x`@everyone`")
    assert text.startswith("I don't know the command `/box x@everyone`.")


@pytest.mark.parametrize(
    "body",
    [
        # A block quote goes on over the lines after it until a blank line (lazy continuation).
        "> quoted\n/box fix",
        "> quoted\n  /box fix",
        "> - a quoted list item\n/box fix",
        "> > nested quote\n/box fix",
        # Fences inside list items, and fences indented under a list item.
        "- ```\n  /box fix\n  ```",
        "1. ~~~\n   /box fix\n   ~~~",
        "- item\n\n  ```\n  /box fix\n  ```",
        "- item\n  - ```\n    /box fix",
        # HTML comments opened in the middle of a line, and other raw HTML over lines.
        "text <!--\n/box fix\n-->",
        "see <!-- a\nb -->\nthen <!--\n/box fix -->",
        "text <span title='\n/box fix\n'>x</span>",
        "<details>\n/box fix\n</details>",
        "<div\n/box fix",
        # Code spans that run over lines.
        "run `this\n/box fix` now",
        "run ``a ` b\n/box fix``",
        # Indented code blocks: at the top level and inside a list item.
        "Example:\n\n    /box fix",
        "  \t/box fix",
        "- item\n\n      /box fix",
        "> quote\n\n    /box fix",
        # A line that opens a list item or a quote is not a command line.
        "- /box fix",
        "1. /box fix",
        "> quoted\n>\n> /box fix",
    ],
)
def test_not_a_command_as_github_renders_it(body: str) -> None:
    assert parse_command(body) is None


@pytest.mark.parametrize(
    "body",
    [
        "> quoted\n\n/box fix",
        "> quoted\n>\n/box fix",
        "> ```\n/box fix",
        "> quoted\n# Heading\n/box fix",
        "> quoted\n---\n/box fix",
        "- ```\n  code\n  ```\n/box fix",
        "- ```\n/box fix",
        "- item\n  /box fix",
        "- item\n/box fix",
        "- item\n\n    /box fix",
        "1. item\n2. item\n   /box fix",
        "text <!-- note -->\n/box fix",
        "text <!--\n\n/box fix",
        "<!-- one -->\n<!-- two\n-->\n/box fix",
        "<details>\n<summary>Log</summary>\nline\n\n/box fix",
        "run `this` and `that\n\n/box fix",
        "a lone ` backtick\n/box fix",
        "openers that never close: <!-- <? <![CDATA[ <!X `` <a b='\n/box fix",
        "a <b>bold</b> word\n/box fix",
        "Example:\n\n    code\n/box fix",
        "    ```\n/box fix",
        "Thanks\n\t\n/box fix",
    ],
)
def test_command_after_rendered_blocks_counts(body: str) -> None:
    assert parse_command(body) == Command(FIX)


def test_command_in_a_list_item_keeps_its_instructions() -> None:
    body = "- item\n  /box fix the\ttabs\n  and more"
    assert parse_command(body) == Command(FIX, "the\ttabs\n  and more")


def test_escaped_backtick_opens_no_code_span() -> None:
    assert parse_command("escaped \\`code\n/box fix now `") == Command(FIX, "now `")
