"""Tests for reading, validating and merging `.github/box.yml`."""

from __future__ import annotations

import pytest

from bot.config.repo import (
    CONFIG_PATH,
    DEFAULTS_SOURCE,
    MAX_CONFIG_BYTES,
    AutoFixCI,
    AutoFixReviews,
    ConfigProblem,
    Defaults,
    EffectiveConfig,
    RepoConfig,
    RepoConfigError,
    format_problems,
    merge_configs,
    parse_repo_config,
)
from bot.github.permissions import permission_satisfies

ORG_SOURCE = "acme/.github:.github/box.yml"
CODEX_MODELS = "`gpt-5.5`, `gpt-5.4`, `gpt-5.4-mini`, `gpt-5.3-codex`"


def problems_of(text: str | bytes, source: str = CONFIG_PATH) -> list[tuple[int | None, str]]:
    """Parse *text*, expecting failure, and return its problems as `(line, message)`."""
    with pytest.raises(RepoConfigError) as caught:
        parse_repo_config(text, source)
    assert all(problem.source == source for problem in caught.value.problems)
    return [(problem.line, problem.message) for problem in caught.value.problems]


def merge_problems(
    defaults: Defaults, org: RepoConfig | None, repo: RepoConfig | None
) -> list[ConfigProblem]:
    """Merge, expecting failure, and return the problems."""
    with pytest.raises(RepoConfigError) as caught:
        merge_configs(defaults, org, repo)
    return caught.value.problems


FULL_FILE = """\
# box-bot settings
label: agent:go
provider: claude
model: opus
reasoning_effort: max
ttl_minutes: 90
on_close: delete
permission: maintain
allowed_users: [Octocat, '@hubot']
denied_users:
  - mallory
instructions: |
  Run `make test` before you commit.
prompt_file: ./docs/AGENTS.md
max_active_boxes: 3
max_runs_per_user_per_day: 0
auto_fix_ci:
  enabled: yes
  max_attempts: 5
draft_pr: true
show_desktop: false
"""


def test_every_key_is_read_and_normalised() -> None:
    config = parse_repo_config(FULL_FILE)

    assert config == RepoConfig(
        label="agent:go",
        provider="claude-code",
        model="opus",
        reasoning_effort="max",
        ttl_minutes=90,
        on_close="delete",
        permission="maintain",
        allowed_users=("Octocat", "hubot"),
        denied_users=("mallory",),
        instructions="Run `make test` before you commit.\n",
        prompt_file="docs/AGENTS.md",
        max_active_boxes=3,
        max_runs_per_user_per_day=0,
        auto_fix_ci=AutoFixCI(enabled=True, max_attempts=5),
        draft_pr=True,
        show_desktop=False,
    )
    assert config.lines["model"] == 4
    assert config.lines["auto_fix_ci"] == 17


def test_bytes_with_a_byte_order_mark_are_read() -> None:
    assert parse_repo_config(b"\xef\xbb\xbflabel: go\n") == RepoConfig(label="go")


@pytest.mark.parametrize("text", ["", "\n", "# nothing yet\n", "---\n", b""])
def test_empty_file_is_an_empty_config(text: str | bytes) -> None:
    assert parse_repo_config(text, ORG_SOURCE) == RepoConfig(source=ORG_SOURCE)


def test_unknown_key_suggests_the_closest_known_key() -> None:
    text = "label: go\nprovider: codex\nmodle: gpt-5.4\nfrobnicate: 1\n"

    assert problems_of(text) == [
        (3, "unknown key `modle` (did you mean `model`?)"),
        (4, "unknown key `frobnicate`"),
    ]


def test_unknown_key_inside_auto_fix_ci_is_named_with_its_parent() -> None:
    text = "auto_fix_ci:\n  enabled: true\n  max_attempt: 2\n"

    assert problems_of(text) == [
        (3, "unknown key `auto_fix_ci.max_attempt` (did you mean `max_attempts`?)")
    ]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("ttl_minutes: '30'", 1, "`ttl_minutes` must be a whole number, not a string"),
        ("ttl_minutes: 1.5", 1, "`ttl_minutes` must be a whole number, not a decimal number"),
        ('draft_pr: "true"', 1, "`draft_pr` must be true or false, not a string"),
        ("show_desktop: 1", 1, "`show_desktop` must be true or false, not an integer"),
        ("label: 2024-01-01", 1, "`label` must be a string, not a date (put it in quotes)"),
        ("label: 42", 1, "`label` must be a string, not an integer (put it in quotes)"),
        ("label:", 1, "`label` has no value; give one or remove the key"),
        ("instructions:\n  - a\n", 2, "`instructions` must be a string, not a list"),
        ("allowed_users: octocat", 1, "`allowed_users` must be a list of logins, not a string"),
        (
            "auto_fix_ci: true",
            1,
            "`auto_fix_ci` must be a mapping with `enabled` and `max_attempts`, not a boolean",
        ),
        (
            "auto_fix_ci:\n  enabled: 'on'\n",
            2,
            "`auto_fix_ci.enabled` must be true or false, not a string",
        ),
        (
            "denied_users:\n  - ok\n  - 7\n",
            3,
            "each entry of `denied_users` must be a string, not an integer (put it in quotes)",
        ),
        ("? [a, b]\n: 1\n", 1, "keys must be plain names, not a list"),
    ],
)
def test_wrong_type_is_reported_at_its_line(text: str, line: int, message: str) -> None:
    assert problems_of(text) == [(line, message)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ttl_minutes: 0", "`ttl_minutes` must be between 1 and 43200, not 0"),
        ("ttl_minutes: 43201", "`ttl_minutes` must be between 1 and 43200, not 43201"),
        ("max_active_boxes: -1", "`max_active_boxes` must be 0 or more, not -1"),
        (
            "auto_fix_ci: {max_attempts: 11}",
            "`auto_fix_ci.max_attempts` must be between 1 and 10, not 11",
        ),
        ("on_close: keep", "`on_close` must be one of `archive`, `delete`, not `keep`"),
        (
            "permission: maintainer",
            "`permission` must be one of `write`, `maintain`, `admin`, not `maintainer` "
            "(did you mean `maintain`?)",
        ),
        (
            "provider: codx",
            "`provider` must be one of `codex`, `claude-code`, `claude`, not `codx` "
            "(did you mean `codex`?)",
        ),
        ("label: '  '", "`label` must not be empty"),
        ("label: " + "x" * 51, "`label` is 51 characters long; the limit is 50"),
        (
            "instructions: " + "x" * 20_001,
            "`instructions` is 20001 characters long; the limit is 20000",
        ),
        (
            "allowed_users: ['not a login']",
            "`allowed_users` entry `not a login` is not a GitHub login",
        ),
        (
            "prompt_file: /etc/passwd",
            "`prompt_file` must be a path inside the repository, not an absolute path",
        ),
        (
            "prompt_file: 'C:/AGENTS.md'",
            "`prompt_file` must be a path inside the repository, not an absolute path",
        ),
        ("prompt_file: docs/../../secrets", "`prompt_file` must not contain `..`"),
        ("prompt_file: 'docs\\AGENTS.md'", "`prompt_file` must use `/` to separate folders"),
        ("prompt_file: ./", "`prompt_file` must not be empty"),
    ],
)
def test_bad_value_is_reported(text: str, message: str) -> None:
    assert problems_of("draft_pr: false\n" + text + "\n") == [(2, message)]


def test_model_not_offered_by_the_provider_in_the_same_file() -> None:
    assert problems_of("provider: codex\nmodel: opus\n") == [
        (
            2,
            "model `opus` is not available for provider `codex` (from `.github/box.yml` line 1); "
            f"use one of {CODEX_MODELS}",
        )
    ]


def test_unknown_model_without_provider_suggests_a_known_one() -> None:
    assert problems_of("model: gpt-5.4-mni\n") == [
        (
            1,
            "unknown model `gpt-5.4-mni`; use one of "
            f"{CODEX_MODELS}, `opus`, `sonnet`, `haiku` (did you mean `gpt-5.4-mini`?)",
        )
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "model: sonnet\nreasoning_effort: max\n",
            "reasoning effort `max` is not available for model `sonnet` "
            "(from `.github/box.yml` line 1); use one of `low`, `medium`, `high`",
        ),
        (
            "model: gpt-5.3-codex\nreasoning_effort: none\n",
            "reasoning effort `none` is not available for model `gpt-5.3-codex` "
            "(from `.github/box.yml` line 1); use one of `low`, `medium`, `high`, `xhigh`",
        ),
        (
            "model: haiku\nreasoning_effort: low\n",
            "model `haiku` (from `.github/box.yml` line 1) takes no reasoning effort; "
            "remove `reasoning_effort`",
        ),
        (
            "provider: claude\nreasoning_effort: xhigh\n",
            "reasoning effort `xhigh` is not available for any model of provider `claude-code` "
            "(from `.github/box.yml` line 1); use one of `low`, `medium`, `high`, `max`",
        ),
        (
            "label: go\nreasoning_effort: extreme\n",
            "unknown reasoning effort `extreme`; use one of "
            "`none`, `low`, `medium`, `high`, `xhigh`, `max`",
        ),
    ],
)
def test_effort_not_taken_by_the_model_or_provider(text: str, message: str) -> None:
    assert problems_of(text) == [(2, message)]


@pytest.mark.parametrize(
    "text",
    [
        "provider: codex\nreasoning_effort: none\n",
        "provider: claude-code\nreasoning_effort: max\n",
        "model: gpt-5.5\nreasoning_effort: xhigh\n",
        "model: haiku\n",
    ],
)
def test_valid_agent_combinations_are_accepted(text: str) -> None:
    parse_repo_config(text)


def test_anchors_and_aliases_are_refused_not_expanded() -> None:
    text = "label: &name go\ninstructions: *name\n"

    assert problems_of(text) == [
        (1, "anchors (`&name`) are not allowed; write the value out"),
        (2, "aliases (`*name`) are not allowed; write the value out"),
    ]


def test_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]

    problems = problems_of("\n".join(lines) + "\n")

    assert (9, "aliases (`*a7`) are not allowed; write the value out") in problems
    assert (1, "unknown key `a0`") in problems


def test_duplicate_key_names_the_first_line() -> None:
    text = "model: gpt-5.4\nlabel: go\nmodel: gpt-5.5\n"

    assert problems_of(text) == [(3, "duplicate key `model` (first set on line 1)")]


@pytest.mark.parametrize("encode", [False, True])
def test_file_over_the_size_limit_is_one_problem(encode: bool) -> None:
    text = "# " + "x" * MAX_CONFIG_BYTES + "\n"

    problems = problems_of(text.encode() if encode else text)

    assert problems == [
        (None, f"file is larger than 64 KiB ({MAX_CONFIG_BYTES + 3} bytes); shorten it")
    ]


def test_file_at_the_size_limit_is_read() -> None:
    text = "label: go\n#" + "x" * (MAX_CONFIG_BYTES - 12) + "\n"

    assert parse_repo_config(text) == RepoConfig(label="go")


@pytest.mark.parametrize(
    ("text", "line", "got"),
    [
        ("- label: go\n", 1, "a list"),
        ("# settings\n\njust some text\n", 3, "a string"),
        ("42\n", 1, "an integer"),
    ],
)
def test_top_level_must_be_a_mapping(text: str, line: int, got: str) -> None:
    assert problems_of(text) == [
        (line, f"the top level must be a mapping of keys to values, not {got}")
    ]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            "label: go\nmodel: [gpt\nprovider: codex\n",
            3,
            "could not parse YAML: while parsing a flow sequence: expected ',' or ']', but got ':'",
        ),
        (
            "label: go\n\tmodel: opus\n",
            2,
            "could not parse YAML: while scanning for the next token: "
            "found character '\\t' that cannot start any token",
        ),
        (
            "label: go\n---\nlabel: again\n",
            2,
            "could not parse YAML: expected a single document in the stream: "
            "but found another document",
        ),
        (
            "label: go\ninstructions: \x07\n",
            2,
            "could not parse YAML: special characters are not allowed (#x0007)",
        ),
        (
            "label: " + "[" * 20 + "]" * 20 + "\n",
            1,
            "could not parse YAML: the file is nested too deeply",
        ),
    ],
)
def test_unparseable_yaml_reports_the_parser_line(text: str, line: int, message: str) -> None:
    assert problems_of(text) == [(line, message)]


def test_bytes_that_are_not_utf8_report_their_line() -> None:
    assert problems_of(b"label: go\nmodel: \xff\n") == [(2, "file is not valid UTF-8 text")]


def test_every_problem_is_reported_in_line_order() -> None:
    text = (
        "label: go\n"
        "provider: codex\n"
        "ttl_minutes: forever\n"
        "model: opus\n"
        "on_close: keep\n"
        "draft_pr: 'yes'\n"
        "lable: other\n"
    )

    with pytest.raises(RepoConfigError) as caught:
        parse_repo_config(text, ORG_SOURCE)

    assert caught.value.problems == [
        ConfigProblem(ORG_SOURCE, 3, "`ttl_minutes` must be a whole number, not a string"),
        ConfigProblem(
            ORG_SOURCE,
            4,
            f"model `opus` is not available for provider `codex` (from `{ORG_SOURCE}` line 2); "
            f"use one of {CODEX_MODELS}",
        ),
        ConfigProblem(ORG_SOURCE, 5, "`on_close` must be one of `archive`, `delete`, not `keep`"),
        ConfigProblem(ORG_SOURCE, 6, "`draft_pr` must be true or false, not a string"),
        ConfigProblem(ORG_SOURCE, 7, "unknown key `lable` (did you mean `label`?)"),
    ]
    assert str(caught.value) == format_problems(caught.value.problems)


def test_format_problems_renders_a_markdown_list() -> None:
    problems = [
        ConfigProblem(CONFIG_PATH, 4, "unknown key `modle` (did you mean `model`?)"),
        ConfigProblem(DEFAULTS_SOURCE, None, "unknown provider `gemini`"),
    ]

    assert format_problems(problems) == (
        "- `.github/box.yml` line 4: unknown key `modle` (did you mean `model`?)\n"
        "- `operator defaults`: unknown provider `gemini`"
    )


def test_user_values_cannot_break_out_of_inline_code() -> None:
    text = "on_close: 'x` @everyone `y'\nlabel: go\nmodel: \"a\\nb\"\n"

    assert problems_of(text) == [
        (1, "`on_close` must be one of `archive`, `delete`, not `x' @everyone 'y`"),
        (3, f"unknown model `a\\nb`; use one of {CODEX_MODELS}, `opus`, `sonnet`, `haiku`"),
    ]


def test_merge_without_files_uses_the_operator_defaults() -> None:
    defaults = Defaults(
        label="bot:go",
        provider="claude",
        model="sonnet",
        reasoning_effort="high",
        ttl_seconds=600,
        on_close="delete",
    )

    assert merge_configs(defaults, None, None) == EffectiveConfig(
        label="bot:go",
        provider="claude-code",
        model="sonnet",
        reasoning_effort="high",
        ttl_seconds=600,
        on_close="delete",
    )


def test_merge_takes_each_key_from_the_highest_source_that_sets_it() -> None:
    org = parse_repo_config(
        "label: org:go\nttl_minutes: 30\npermission: admin\nallowed_users: [Alice]\n"
        "instructions: org rules\ndraft_pr: true\nauto_fix_ci: {enabled: true, max_attempts: 5}\n",
        ORG_SOURCE,
    )
    repo = parse_repo_config(
        "ttl_minutes: 120\npermission: maintain\ninstructions: repo rules\ndraft_pr: false\n"
        "max_active_boxes: 2\nauto_fix_ci: {max_attempts: 2}\nshow_desktop: true\n"
    )

    merged = merge_configs(Defaults(label="env:go", ttl_seconds=60), org, repo)

    assert merged == EffectiveConfig(
        label="org:go",
        provider="codex",
        ttl_seconds=7200,
        permission="maintain",
        allowed_users=frozenset({"alice"}),
        instructions="repo rules",
        max_active_boxes=2,
        auto_fix_ci_enabled=True,
        auto_fix_ci_max_attempts=2,
        draft_pr=False,
        show_desktop=True,
    )


def test_merge_reads_ttl_and_label_from_the_environment_when_files_are_silent() -> None:
    org = parse_repo_config("auto_fix_ci: {enabled: true}\n", ORG_SOURCE)

    merged = merge_configs(Defaults(label="env:go", ttl_seconds=60), org, RepoConfig())

    assert (merged.label, merged.ttl_seconds) == ("env:go", 60)
    assert (merged.auto_fix_ci_enabled, merged.auto_fix_ci_max_attempts) == (True, 3)


def test_merge_checks_an_org_model_against_the_default_provider() -> None:
    org = parse_repo_config("label: go\nmodel: opus\n", ORG_SOURCE)

    assert merge_problems(Defaults(provider="codex"), org, None) == [
        ConfigProblem(
            ORG_SOURCE,
            2,
            "model `opus` is not available for provider `codex` (from operator defaults); "
            f"use one of {CODEX_MODELS}",
        )
    ]


def test_merge_checks_a_repo_model_against_the_org_provider() -> None:
    org = parse_repo_config("provider: claude\n", ORG_SOURCE)
    repo = parse_repo_config("label: go\nmodel: gpt-5.4\n")

    assert merge_problems(Defaults(), org, repo) == [
        ConfigProblem(
            CONFIG_PATH,
            2,
            f"model `gpt-5.4` is not available for provider `claude-code` (from `{ORG_SOURCE}` "
            "line 1); use one of `opus`, `sonnet`, `haiku`",
        )
    ]


def test_merge_names_the_source_of_an_effort_the_new_model_does_not_take() -> None:
    repo = parse_repo_config("label: go\n\nmodel: gpt-5.3-codex\n")
    defaults = Defaults(model="gpt-5.4", reasoning_effort="none")

    assert merge_problems(defaults, None, repo) == [
        ConfigProblem(
            DEFAULTS_SOURCE,
            None,
            "reasoning effort `none` is not available for model `gpt-5.3-codex` "
            "(from `.github/box.yml` line 3); use one of `low`, `medium`, `high`, `xhigh`",
        )
    ]


def test_merge_checks_the_default_provider() -> None:
    assert merge_problems(Defaults(provider="gemini"), None, None) == [
        ConfigProblem(
            DEFAULTS_SOURCE,
            None,
            "unknown provider `gemini` (from operator defaults); use one of `codex`, `claude-code`",
        )
    ]


def test_switching_provider_drops_inherited_choices_it_does_not_offer() -> None:
    defaults = Defaults(provider="codex", model="gpt-5.5", reasoning_effort="xhigh")
    repo = parse_repo_config("provider: claude\n")

    merged = merge_configs(defaults, None, repo)

    assert (merged.provider, merged.model, merged.reasoning_effort) == ("claude-code", None, None)


def test_switching_provider_keeps_inherited_choices_it_offers() -> None:
    defaults = Defaults(provider="codex", reasoning_effort="high")
    org = parse_repo_config("model: opus\n", ORG_SOURCE)
    repo = parse_repo_config("provider: claude-code\n")

    merged = merge_configs(defaults, org, repo)

    assert (merged.provider, merged.model, merged.reasoning_effort) == (
        "claude-code",
        "opus",
        "high",
    )


def test_repo_effort_applies_to_the_org_model() -> None:
    org = parse_repo_config("provider: claude\nmodel: sonnet\n", ORG_SOURCE)
    repo = parse_repo_config("reasoning_effort: medium\n")

    merged = merge_configs(Defaults(), org, repo)

    assert (merged.provider, merged.model, merged.reasoning_effort) == (
        "claude-code",
        "sonnet",
        "medium",
    )


def test_repo_lists_replace_org_lists() -> None:
    org = parse_repo_config("allowed_users: [alice]\ndenied_users: [eve]\n", ORG_SOURCE)
    repo = parse_repo_config("allowed_users: []\n")

    merged = merge_configs(Defaults(), org, repo)

    assert merged.allowed_users == frozenset()
    assert merged.denied_users == frozenset({"eve"})


@pytest.mark.parametrize(
    ("allowed", "denied", "login", "expected"),
    [
        ((), (), "anyone", True),
        (("Alice",), (), "alice", True),
        (("alice",), (), "ALICE", True),
        (("alice",), (), "bob", False),
        ((), ("Eve",), "eve", False),
        (("eve",), ("eve",), "Eve", False),
    ],
)
def test_user_allowed(
    allowed: tuple[str, ...], denied: tuple[str, ...], login: str, expected: bool
) -> None:
    repo = RepoConfig(allowed_users=allowed, denied_users=denied)

    assert merge_configs(Defaults(), None, repo).user_allowed(login) is expected


@pytest.mark.parametrize(
    ("show", "private", "expected"),
    [(True, True, True), (True, False, False), (False, True, False), (None, True, False)],
)
def test_desktop_is_only_shown_for_private_repositories(
    show: bool | None, private: bool, expected: bool
) -> None:
    merged = merge_configs(Defaults(), None, RepoConfig(show_desktop=show))

    assert merged.desktop_allowed(private) is expected


@pytest.mark.parametrize(
    ("permission", "role_name", "minimum", "expected"),
    [
        ("write", "write", "write", True),
        ("write", "maintain", "maintain", True),
        ("write", "write", "maintain", False),
        ("admin", "admin", "admin", True),
        ("write", "maintain", "admin", False),
        ("read", "triage", "write", False),
        ("write", None, "write", True),
        ("write", None, "maintain", False),
        ("write", "release-manager", "write", True),
        ("read", "docs-writer", "write", False),
        ("none", None, "write", False),
        ("", None, "write", False),
    ],
)
def test_permission_satisfies(
    permission: str, role_name: str | None, minimum: str, expected: bool
) -> None:
    assert permission_satisfies(permission, role_name, minimum) is expected


def test_permission_satisfies_refuses_an_unknown_minimum() -> None:
    with pytest.raises(ValueError, match="owner"):
        permission_satisfies("admin", "admin", "owner")


BOX_SETUP_FILE = """\
setup: |
  npm ci
  npm run build
machine: large
environment: web.app-2
env:
  NODE_ENV: test
  PORT: 3000
max_dollars_per_run: 2
max_dollars_per_day: 12.5
"""


def test_box_setup_and_dollar_keys_are_read() -> None:
    config = parse_repo_config(BOX_SETUP_FILE)

    assert config.setup == "npm ci\nnpm run build\n"
    assert (config.machine, config.environment) == ("large", "web.app-2")
    assert dict(config.env or {}) == {"NODE_ENV": "test", "PORT": "3000"}
    assert (config.max_dollars_per_run, config.max_dollars_per_day) == (2.0, 12.5)
    assert {key: config.lines[key] for key in ("setup", "machine", "env")} == {
        "setup": 1,
        "machine": 4,
        "env": 6,
    }


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("machine: huge\n", 1, "`machine` must be one of `small`, `default`, `large`, not `huge`"),
        ("setup: ''\n", 1, "`setup` must not be empty"),
        (
            "environment: 'my env'\n",
            1,
            "`environment` must be a Box environment name (letters, digits, `.`, `_`, `-`,"
            " at most 64), not `my env`",
        ),
        ("env: [A]\n", 1, "`env` must be a mapping of variable names to values, not a list"),
        (
            "env:\n  9LIVES: x\n",
            2,
            "`env` name `9LIVES` is not a variable name (a letter or `_`, then letters, digits"
            " or `_`, at most 128)",
        ),
        ("env:\n  BOX_ID: x\n", 2, "`env` name `BOX_ID` is kept by Box for itself; choose another"),
        ("env:\n  A: 1\n  A: 2\n", 3, "duplicate key `env.A` (first set on line 2)"),
        ("env:\n  A:\n", 2, "`env.A` has no value; give one or remove the key"),
        ("max_dollars_per_run: 0\n", 1, "`max_dollars_per_run` must be more than 0, not `0`"),
        ("max_dollars_per_day: -3.5\n", 1, "`max_dollars_per_day` must be more than 0, not `-3.5`"),
        (
            "max_dollars_per_run: two\n",
            1,
            "`max_dollars_per_run` must be an amount of dollars (a number), not a string",
        ),
    ],
)
def test_bad_box_setup_and_dollar_values_are_reported(text: str, line: int, message: str) -> None:
    assert problems_of(text) == [(line, message)]


def test_env_over_the_count_limit_is_refused() -> None:
    many = "env:\n" + "".join(f"  V{n}: x\n" for n in range(101))

    assert problems_of(many) == [(2, "`env` has 101 variables; Box takes at most 100")]


def test_env_of_both_files_over_the_limits_is_refused_at_the_merge() -> None:
    org = parse_repo_config(
        "env:\n" + "".join(f"  O{n}: {'y' * 900}\n" for n in range(40)), ORG_SOURCE
    )
    repo = parse_repo_config("env:\n" + "".join(f"  R{n}: {'y' * 900}\n" for n in range(40)))
    counted = parse_repo_config("env:\n" + "".join(f"  O{n}: x\n" for n in range(61)), ORG_SOURCE)
    more = parse_repo_config("\nenv:\n" + "".join(f"  R{n}: x\n" for n in range(40)))

    (size,) = merge_problems(Defaults(), org, repo)
    (count,) = merge_problems(Defaults(), counted, more)

    assert (size.source, size.line) == (CONFIG_PATH, 1)
    assert size.message.startswith("`env` is 72")
    assert size.message.endswith(
        " bytes in all; Box takes at most 64 KiB (with the organisation's variables)"
    )
    assert (count.source, count.line, count.message) == (
        CONFIG_PATH,
        2,
        "`env` has 101 variables; Box takes at most 100 (with the organisation's variables)",
    )


def test_box_setup_merges_over_the_operator_defaults() -> None:
    org = parse_repo_config(
        "machine: small\nenv: {A: org, B: org}\nmax_dollars_per_day: 9\n", ORG_SOURCE
    )
    repo = parse_repo_config("setup: npm ci\nenv: {B: repo}\nmax_dollars_per_run: 2\n")
    defaults = Defaults(setup="make", machine="default", environment="base")

    merged = merge_configs(defaults, org, repo)
    silent = merge_configs(defaults, None, None)

    assert (merged.setup, merged.machine, merged.environment) == ("npm ci", "small", "base")
    assert dict(merged.env) == {"A": "org", "B": "repo"}
    assert (merged.max_dollars_per_run, merged.max_dollars_per_day) == (2.0, 9.0)
    assert (silent.setup, silent.machine, silent.environment) == ("make", "default", "base")
    assert dict(silent.env) == {} and silent.max_dollars_per_run is None


# -- auto_fix_reviews -------------------------------------------------------------------------


def test_auto_fix_reviews_is_read_with_its_line() -> None:
    config = parse_repo_config("label: go\nauto_fix_reviews:\n  enabled: true\n  max_rounds: 2\n")

    assert config.auto_fix_reviews == AutoFixReviews(enabled=True, max_rounds=2)
    assert config.lines["auto_fix_reviews"] == 2


def test_auto_fix_reviews_is_off_with_three_rounds_by_default() -> None:
    merged = merge_configs(Defaults(), None, parse_repo_config("label: go\n"))

    assert (merged.auto_fix_reviews_enabled, merged.auto_fix_reviews_max_rounds) == (False, 3)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            "label: go\nauto_fix_reviews: yes\n",
            2,
            "`auto_fix_reviews` must be a mapping with `enabled` and `max_rounds`, not a boolean",
        ),
        (
            "auto_fix_reviews:\n  enabled: 'yes'\n",
            2,
            "`auto_fix_reviews.enabled` must be true or false, not a string",
        ),
        (
            "auto_fix_reviews:\n  enabled: true\n  max_rounds: 0\n",
            3,
            "`auto_fix_reviews.max_rounds` must be between 1 and 10, not 0",
        ),
        (
            "auto_fix_reviews: {max_round: 2}\n",
            1,
            "unknown key `auto_fix_reviews.max_round` (did you mean `max_rounds`?)",
        ),
    ],
)
def test_auto_fix_reviews_problems_are_reported_at_their_line(
    text: str, line: int, message: str
) -> None:
    assert problems_of(text) == [(line, message)]


def test_auto_fix_reviews_is_merged_per_sub_key() -> None:
    org = parse_repo_config("auto_fix_reviews: {enabled: true, max_rounds: 5}\n", ORG_SOURCE)
    repo = parse_repo_config("auto_fix_reviews: {max_rounds: 1}\n")

    merged = merge_configs(Defaults(), org, repo)

    assert (merged.auto_fix_reviews_enabled, merged.auto_fix_reviews_max_rounds) == (True, 1)
