"""Read a repository's `.github/box.yml`, report its problems by line, and merge configs.

Precedence, key by key: the repository's file, then the organisation's `.github` repository's
file, then the operator's defaults. `auto_fix_ci` and `auto_fix_reviews` are merged per sub-key,
`env` per variable.

Provider, model and reasoning effort are checked against Box's catalogue (`bot.box.catalogue`),
in each file and again on the merged result, where a problem names the source of the value.
A source that switches to another provider drops an inherited `model` or `reasoning_effort`
that the new provider does not offer (they were chosen for the other provider). A
`reasoning_effort` without a model is accepted when at least one model of the provider takes it.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

import yaml
from yaml.composer import ComposerError
from yaml.constructor import SafeConstructor
from yaml.reader import ReaderError

from bot.box.box_rules import (
    ENV_NAME_RE,
    MACHINE_CHOICES,
    MAX_ENV_BYTES,
    MAX_ENV_VARS,
    RESERVED_ENV_NAMES,
    environment_name_ok,
)
from bot.box.catalogue import ALL_MODELS, EFFORT_ORDER, MODEL_CATALOGUE, PROVIDER_ALIASES
from bot.redact import redact
from bot.settings import MAX_DOLLARS

T = TypeVar("T")

CONFIG_PATH = ".github/box.yml"
DEFAULTS_SOURCE = "operator defaults"
MAX_CONFIG_BYTES = 64 * 1024
MAX_DEPTH = 8
MAX_INSTRUCTIONS_CHARS = 20_000
MAX_LABEL_CHARS = 50
MAX_TTL_MINUTES = 43_200
MAX_FIX_ATTEMPTS = 10
DEFAULT_FIX_ATTEMPTS = 3
MAX_REVIEW_ROUNDS = 10
DEFAULT_REVIEW_ROUNDS = 3
DEFAULT_LABEL = "box:fix"
DEFAULT_PROVIDER = "codex"
DEFAULT_TTL_SECONDS = 3600

ON_CLOSE_CHOICES = ("archive", "delete")
PERMISSION_CHOICES = ("write", "maintain", "admin")
LOGIN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}$")
DRIVE_RE = re.compile(r"^[A-Za-z]:")

TOO_LARGE = "file is larger than {limit} KiB ({size} bytes); shorten it"
NOT_UTF8 = "file is not valid UTF-8 text"
SYNTAX_ERROR = "could not parse YAML: {problem}"
NOT_A_MAPPING = "the top level must be a mapping of keys to values, not {got}"
ANCHOR_REJECTED = "anchors (`&{name}`) are not allowed; write the value out"
ALIAS_REJECTED = "aliases (`*{name}`) are not allowed; write the value out"
TOO_DEEP = "the file is nested too deeply"
KEY_NOT_NAME = "keys must be plain names, not {got}"
UNKNOWN_KEY = "unknown key {key}"
DID_YOU_MEAN = " (did you mean {suggestion}?)"
DUPLICATE_KEY = "duplicate key {key} (first set on line {first})"
WRONG_TYPE = "{key} must be {expected}, not {got}"
QUOTE_HINT = " (put it in quotes)"
OUT_OF_RANGE = "{key} must be between {low} and {high}, not {value}"
TOO_SMALL = "{key} must be {low} or more, not {value}"
NOT_ONE_OF = "{key} must be one of {choices}, not {value}"
BLANK = "{key} must not be empty"
NO_VALUE = "{key} has no value; give one or remove the key"
TOO_LONG = "{key} is {length} characters long; the limit is {limit}"
BAD_LOGIN = "{key} entry {value} is not a GitHub login"
PATH_ABSOLUTE = "{key} must be a path inside the repository, not an absolute path"
PATH_PARENT = "{key} must not contain `..`"
PATH_BACKSLASH = "{key} must use `/` to separate folders"
UNKNOWN_PROVIDER = "unknown provider {value} (from {origin}); use one of {choices}"
UNKNOWN_MODEL = "unknown model {value}; use one of {choices}"
MODEL_NOT_FOR_PROVIDER = (
    "model {value} is not available for provider {provider} (from {origin}); use one of {choices}"
)
NO_EFFORT = "model {model} (from {origin}) takes no reasoning effort; remove `reasoning_effort`"
EFFORT_NOT_FOR_MODEL = (
    "reasoning effort {value} is not available for model {model} (from {origin}); "
    "use one of {choices}"
)
EFFORT_NOT_FOR_PROVIDER = (
    "reasoning effort {value} is not available for any model of provider {provider} "
    "(from {origin}); use one of {choices}"
)
UNKNOWN_EFFORT = "unknown reasoning effort {value}; use one of {choices}"
BAD_ENVIRONMENT = (
    "{key} must be a Box environment name (letters, digits, `.`, `_`, `-`, at most 64), not {value}"
)
BAD_ENV_NAME = (
    "{key} name {name} is not a variable name (a letter or `_`, then letters, digits or `_`, "
    "at most 128)"
)
RESERVED_ENV_NAME = "{key} name {name} is kept by Box for itself; choose another"
TOO_MANY_ENV = "{key} has {count} variables; Box takes at most {limit}"
ENV_TOO_LARGE = "{key} is {size} bytes in all; Box takes at most {limit} KiB"
ENV_WITH_ORG = " (with the organisation's variables)"
NOT_POSITIVE = "{key} must be more than 0, not {value}"

_TYPE_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "tag:yaml.org,2002:str": "a string",
        "tag:yaml.org,2002:int": "an integer",
        "tag:yaml.org,2002:bool": "a boolean",
        "tag:yaml.org,2002:float": "a decimal number",
        "tag:yaml.org,2002:null": "an empty value",
        "tag:yaml.org,2002:timestamp": "a date",
        "tag:yaml.org,2002:binary": "binary data",
    }
)
_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_BOOL = "tag:yaml.org,2002:bool"
_FLOAT = "tag:yaml.org,2002:float"
_NULL = "tag:yaml.org,2002:null"
_REJECTED_TAG = "box-bot:rejected"
_CONSTRUCTOR = SafeConstructor()


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a config source, at a 1-based line when known."""

    source: str
    line: int | None
    message: str


class RepoConfigError(Exception):
    """A config source is unusable; `problems` lists every reason found."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__(format_problems(problems))
        self.problems = problems


@dataclass(frozen=True)
class AutoFixCI:
    """The `auto_fix_ci` mapping as written; None means not set."""

    enabled: bool | None = None
    max_attempts: int | None = None


@dataclass(frozen=True)
class AutoFixReviews:
    """The `auto_fix_reviews` mapping as written; None means not set."""

    enabled: bool | None = None
    max_rounds: int | None = None


@dataclass(frozen=True)
class RepoConfig:
    """One `.github/box.yml` as written; None means the key is not set."""

    label: str | None = None
    provider: str | None = None
    model: str | None = None
    reasoning_effort: str | None = None
    ttl_minutes: int | None = None
    on_close: str | None = None
    permission: str | None = None
    allowed_users: tuple[str, ...] | None = None
    denied_users: tuple[str, ...] | None = None
    instructions: str | None = None
    prompt_file: str | None = None
    max_active_boxes: int | None = None
    max_runs_per_user_per_day: int | None = None
    auto_fix_ci: AutoFixCI | None = None
    auto_fix_reviews: AutoFixReviews | None = None
    draft_pr: bool | None = None
    show_desktop: bool | None = None
    setup: str | None = None
    machine: str | None = None
    environment: str | None = None
    env: Mapping[str, str] | None = None
    max_dollars_per_run: float | None = None
    max_dollars_per_day: float | None = None
    source: str = CONFIG_PATH
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Defaults:
    """The operator's defaults, from the environment."""

    label: str = DEFAULT_LABEL
    provider: str = DEFAULT_PROVIDER
    model: str | None = None
    reasoning_effort: str | None = None
    ttl_seconds: int = DEFAULT_TTL_SECONDS
    on_close: str = "archive"
    setup: str | None = None
    machine: str | None = None
    environment: str | None = None


@dataclass(frozen=True)
class EffectiveConfig:
    """The settings in force for one repository after merging every source."""

    label: str = DEFAULT_LABEL
    provider: str = DEFAULT_PROVIDER
    model: str | None = None
    reasoning_effort: str | None = None
    ttl_seconds: int = DEFAULT_TTL_SECONDS
    on_close: str = "archive"
    permission: str = "write"
    allowed_users: frozenset[str] = frozenset()
    denied_users: frozenset[str] = frozenset()
    instructions: str = ""
    prompt_file: str | None = None
    max_active_boxes: int | None = None
    max_runs_per_user_per_day: int | None = None
    auto_fix_ci_enabled: bool = False
    auto_fix_ci_max_attempts: int = DEFAULT_FIX_ATTEMPTS
    auto_fix_reviews_enabled: bool = False
    auto_fix_reviews_max_rounds: int = DEFAULT_REVIEW_ROUNDS
    draft_pr: bool = False
    show_desktop: bool = False
    setup: str | None = None
    machine: str | None = None
    environment: str | None = None
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    max_dollars_per_run: float | None = None
    max_dollars_per_day: float | None = None

    def desktop_allowed(self, private: bool) -> bool:
        """Return whether the desktop link may be shown; never for a public repository."""
        return self.show_desktop and private

    def user_allowed(self, login: str) -> bool:
        """Return whether the lists let *login* trigger a box; denial wins over allowance."""
        name = login.lower()
        if name in self.denied_users:
            return False
        return not self.allowed_users or name in self.allowed_users


def too_large(size: int, source: str = CONFIG_PATH) -> RepoConfigError:
    """Return the error for a file of *size* bytes whose content is too large to read."""
    message = TOO_LARGE.format(limit=MAX_CONFIG_BYTES // 1024, size=size)
    return RepoConfigError([ConfigProblem(source, None, message)])


def format_problems(problems: list[ConfigProblem]) -> str:
    """Render problems as a markdown bullet list for a comment or check run summary."""
    return "\n".join(_format_problem(problem) for problem in problems)


def _format_problem(problem: ConfigProblem) -> str:
    where = f"`{problem.source}`"
    if problem.line is not None:
        where += f" line {problem.line}"
    return f"- {where}: {problem.message}"


def _code(value: object, limit: int = 60) -> str:
    """Quote a user-written value as inline code that cannot break out of its backticks."""
    text = redact(str(value)).replace("`", "'")
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"`{text}`"


def _codes(values: Iterable[str]) -> str:
    return ", ".join(_code(value) for value in values)


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return DID_YOU_MEAN.format(suggestion=_code(close[0])) if close else ""


class _Composer(yaml.SafeLoader):
    """Compose YAML into nodes, refusing anchors and aliases instead of expanding them."""

    def __init__(self, stream: str, rejected: list[tuple[int, str]]) -> None:
        self.rejected = rejected
        self.depth = 0
        super().__init__(stream)

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        # types-PyYAML leaves `peek_event` and `get_event` untyped.
        event = self.peek_event()  # type: ignore[no-untyped-call]
        start, end, anchor = event.start_mark, event.end_mark, getattr(event, "anchor", None)
        if isinstance(event, yaml.AliasEvent):
            self.get_event()  # type: ignore[no-untyped-call]
            self.rejected.append((start.line + 1, ALIAS_REJECTED.format(name=anchor)))
            return yaml.ScalarNode(_REJECTED_TAG, "", start, end)
        if anchor is not None:
            self.rejected.append((start.line + 1, ANCHOR_REJECTED.format(name=anchor)))
        if self.depth >= MAX_DEPTH:
            raise ComposerError(None, None, TOO_DEEP, start)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _compose(text: str, rejected: list[tuple[int, str]]) -> yaml.Node | None:
    """Compose the single document in *text*, noting refused anchors and aliases in *rejected*."""
    composer = _Composer(text, rejected)
    try:
        return composer.get_single_node()
    finally:
        composer.dispose()


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _type_name(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return _TYPE_NAMES.get(node.tag, f"a value tagged {_code(node.tag)}")


class _Reader:
    """Turn composed nodes into plain values, collecting every problem with its line."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[ConfigProblem] = []
        self.lines: dict[str, int] = {}

    def problem(self, line: int | None, message: str) -> None:
        """Record a problem at *line*."""
        self.problems.append(ConfigProblem(self.source, line, message))

    def compose(self, text: str | bytes) -> yaml.Node | None:
        """Decode and compose *text*, or record why it cannot be read."""
        decoded = self.decode(text)
        if decoded is None:
            return None
        rejected: list[tuple[int, str]] = []
        try:
            return _compose(decoded, rejected)
        except yaml.MarkedYAMLError as exc:
            self.problem(_mark_line(exc), SYNTAX_ERROR.format(problem=_yaml_message(exc)))
        except ReaderError as exc:
            line = decoded[: exc.position].count("\n") + 1
            problem = f"{exc.reason} (#x{exc.character:04x})"
            self.problem(line, SYNTAX_ERROR.format(problem=problem))
        finally:
            for line, message in rejected:
                self.problem(line, message)
        return None

    def decode(self, text: str | bytes) -> str | None:
        """Return *text* as a string within the size limit, or record why not."""
        raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
        if len(raw) > MAX_CONFIG_BYTES:
            self.problem(None, TOO_LARGE.format(limit=MAX_CONFIG_BYTES // 1024, size=len(raw)))
            return None
        if isinstance(text, str):
            return text
        try:
            return raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            self.problem(raw[: exc.start].count(b"\n") + 1, NOT_UTF8)
            return None

    def entries(
        self, node: yaml.MappingNode, known: tuple[str, ...], prefix: str = ""
    ) -> Iterator[tuple[str, int, yaml.Node]]:
        """Yield each known `(name, line, value node)`; record odd, unknown and duplicate keys."""
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = _line(key_node)
            if key_node.tag == _REJECTED_TAG:
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(line, KEY_NOT_NAME.format(got=_type_name(key_node)))
                continue
            name = str(key_node.value)
            shown = _code(prefix + name)
            if name in seen:
                self.problem(line, DUPLICATE_KEY.format(key=shown, first=seen[name]))
                continue
            seen[name] = line
            if name not in known:
                self.problem(line, UNKNOWN_KEY.format(key=shown) + _suggest(name, known))
                continue
            yield name, line, value_node

    def scalar(
        self, key: str, node: yaml.Node, tag: str, expected: str, subject: str = ""
    ) -> str | None:
        """Return the text of a scalar tagged *tag*, or record a wrong type."""
        if isinstance(node, yaml.ScalarNode) and node.tag == tag:
            return str(node.value)
        hint = QUOTE_HINT if tag == _STR and node.tag in _TYPE_NAMES else ""
        self.mismatch(subject or _code(key), node, expected, hint)
        return None

    def mismatch(self, subject: str, node: yaml.Node, expected: str, hint: str = "") -> None:
        """Record that *node* is not *expected*, unless it was already refused."""
        if node.tag == _REJECTED_TAG:
            return
        if node.tag == _NULL:
            self.problem(_line(node), NO_VALUE.format(key=subject))
            return
        got = _type_name(node)
        self.problem(_line(node), WRONG_TYPE.format(key=subject, expected=expected, got=got) + hint)

    def string(self, key: str, node: yaml.Node, subject: str = "") -> str | None:
        """Return a string value; *subject* names it in messages (default: the key)."""
        return self.scalar(key, node, _STR, "a string", subject)

    def boolean(self, key: str, node: yaml.Node) -> bool | None:
        """Return a true/false value; quoted text is a wrong type."""
        text = self.scalar(key, node, _BOOL, "true or false")
        if text is None:
            return None
        value = SafeConstructor.bool_values.get(text.lower())
        if value is None:
            self.problem(
                _line(node),
                WRONG_TYPE.format(key=_code(key), expected="true or false", got=_code(text)),
            )
        return value

    def integer(self, key: str, node: yaml.Node, low: int, high: int | None = None) -> int | None:
        """Return an integer within `low..high` (no upper bound when *high* is None)."""
        text = self.scalar(key, node, _INT, "a whole number")
        if text is None:
            return None
        assert isinstance(node, yaml.ScalarNode)
        try:
            value = _CONSTRUCTOR.construct_yaml_int(node)
        except (ValueError, IndexError):
            self.problem(
                _line(node),
                WRONG_TYPE.format(key=_code(key), expected="a whole number", got=_code(text)),
            )
            return None
        if high is not None and not low <= value <= high:
            self.problem(
                _line(node), OUT_OF_RANGE.format(key=_code(key), low=low, high=high, value=value)
            )
            return None
        if value < low:
            self.problem(_line(node), TOO_SMALL.format(key=_code(key), low=low, value=value))
            return None
        return value

    def dollars(self, key: str, node: yaml.Node) -> float | None:
        """Return an amount of dollars above 0 (a whole or decimal number)."""
        if isinstance(node, yaml.ScalarNode) and node.tag == _INT:
            value: float | None = self.integer(key, node, 0)
        elif isinstance(node, yaml.ScalarNode) and node.tag == _FLOAT:
            value = float(_CONSTRUCTOR.construct_yaml_float(node))
        else:
            self.mismatch(_code(key), node, "an amount of dollars (a number)")
            return None
        if value is None:
            return None
        if not 0 < value <= MAX_DOLLARS or value != value:
            self.problem(_line(node), NOT_POSITIVE.format(key=_code(key), value=_code(node.value)))
            return None
        return float(value)

    def choice(self, key: str, node: yaml.Node, choices: tuple[str, ...]) -> str | None:
        """Return one of *choices*, suggesting the closest when the value is not one."""
        value = self.string(key, node)
        if value is None or value in choices:
            return value
        message = NOT_ONE_OF.format(key=_code(key), choices=_codes(choices), value=_code(value))
        self.problem(_line(node), message + _suggest(value, choices))
        return None


def _mark_line(exc: yaml.MarkedYAMLError) -> int | None:
    mark = exc.problem_mark or exc.context_mark
    return None if mark is None else mark.line + 1


def _yaml_message(exc: yaml.MarkedYAMLError) -> str:
    parts = [part for part in (exc.context, exc.problem) if part]
    return ": ".join(parts) or "invalid YAML"


def _read_label(reader: _Reader, key: str, node: yaml.Node) -> str | None:
    value = reader.string(key, node)
    if value is None:
        return None
    value = value.strip()
    if not value:
        reader.problem(_line(node), BLANK.format(key=_code(key)))
        return None
    if len(value) > MAX_LABEL_CHARS:
        reader.problem(
            _line(node), TOO_LONG.format(key=_code(key), length=len(value), limit=MAX_LABEL_CHARS)
        )
        return None
    return value


def _read_provider(reader: _Reader, key: str, node: yaml.Node) -> str | None:
    value = reader.choice(key, node, (*MODEL_CATALOGUE, *PROVIDER_ALIASES))
    return None if value is None else PROVIDER_ALIASES.get(value, value)


def _read_ttl(reader: _Reader, key: str, node: yaml.Node) -> int | None:
    return reader.integer(key, node, 1, MAX_TTL_MINUTES)


def _read_count(reader: _Reader, key: str, node: yaml.Node) -> int | None:
    return reader.integer(key, node, 0)


def _read_on_close(reader: _Reader, key: str, node: yaml.Node) -> str | None:
    return reader.choice(key, node, ON_CLOSE_CHOICES)


def _read_permission(reader: _Reader, key: str, node: yaml.Node) -> str | None:
    return reader.choice(key, node, PERMISSION_CHOICES)


def _read_logins(reader: _Reader, key: str, node: yaml.Node) -> tuple[str, ...] | None:
    if not isinstance(node, yaml.SequenceNode):
        reader.mismatch(_code(key), node, "a list of logins")
        return None
    logins = []
    for item in node.value:
        login = reader.string(key, item, f"each entry of {_code(key)}")
        if login is not None and not LOGIN_RE.match(login.removeprefix("@")):
            reader.problem(_line(item), BAD_LOGIN.format(key=_code(key), value=_code(login)))
        elif login is not None:
            logins.append(login.removeprefix("@"))
    return tuple(logins) if len(logins) == len(node.value) else None


def _read_instructions(reader: _Reader, key: str, node: yaml.Node) -> str | None:
    value = reader.string(key, node)
    if value is not None and len(value) > MAX_INSTRUCTIONS_CHARS:
        limit = MAX_INSTRUCTIONS_CHARS
        reader.problem(_line(node), TOO_LONG.format(key=_code(key), length=len(value), limit=limit))
        return None
    return value


def _read_prompt_file(reader: _Reader, key: str, node: yaml.Node) -> str | None:
    value = reader.string(key, node)
    if value is None:
        return None
    parts = [part for part in value.strip().split("/") if part not in ("", ".")]
    if value.startswith("/") or DRIVE_RE.match(value):
        message = PATH_ABSOLUTE
    elif "\\" in value:
        message = PATH_BACKSLASH
    elif ".." in parts:
        message = PATH_PARENT
    elif not parts:
        message = BLANK
    else:
        return "/".join(parts)
    reader.problem(_line(node), message.format(key=_code(key)))
    return None


def _read_switch(
    reader: _Reader, key: str, node: yaml.Node, count: str, maximum: int
) -> tuple[bool | None, int | None] | None:
    """Read a `{enabled: …, <count>: …}` mapping (auto_fix_ci, auto_fix_reviews)."""
    if not isinstance(node, yaml.MappingNode):
        reader.mismatch(_code(key), node, f"a mapping with `enabled` and `{count}`")
        return None
    enabled: bool | None = None
    bound: int | None = None
    for name, _, value in reader.entries(node, ("enabled", count), f"{key}."):
        if name == "enabled":
            enabled = reader.boolean(f"{key}.{name}", value)
        else:
            bound = reader.integer(f"{key}.{name}", value, 1, maximum)
    return enabled, bound


def _read_auto_fix_ci(reader: _Reader, key: str, node: yaml.Node) -> AutoFixCI | None:
    read = _read_switch(reader, key, node, "max_attempts", MAX_FIX_ATTEMPTS)
    return None if read is None else AutoFixCI(enabled=read[0], max_attempts=read[1])


def _read_auto_fix_reviews(reader: _Reader, key: str, node: yaml.Node) -> AutoFixReviews | None:
    read = _read_switch(reader, key, node, "max_rounds", MAX_REVIEW_ROUNDS)
    return None if read is None else AutoFixReviews(enabled=read[0], max_rounds=read[1])


def _read_bool(reader: _Reader, key: str, node: yaml.Node) -> bool | None:
    return reader.boolean(key, node)


def _read_string(reader: _Reader, key: str, node: yaml.Node) -> str | None:
    return reader.string(key, node)


def _read_setup(reader: _Reader, key: str, node: yaml.Node) -> str | None:
    # Box's 64 KiB limit on `setupScript` cannot be passed: the whole file has that limit.
    value = reader.string(key, node)
    if value is not None and not value.strip():
        reader.problem(_line(node), BLANK.format(key=_code(key)))
        return None
    return value


def _read_machine(reader: _Reader, key: str, node: yaml.Node) -> str | None:
    return reader.choice(key, node, MACHINE_CHOICES)


def _read_environment(reader: _Reader, key: str, node: yaml.Node) -> str | None:
    value = reader.string(key, node)
    if value is not None and not environment_name_ok(value):
        reader.problem(_line(node), BAD_ENVIRONMENT.format(key=_code(key), value=_code(value)))
        return None
    return value


def _read_env(reader: _Reader, key: str, node: yaml.Node) -> Mapping[str, str] | None:
    if not isinstance(node, yaml.MappingNode):
        reader.mismatch(_code(key), node, "a mapping of variable names to values")
        return None
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    good = True
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _REJECTED_TAG:
            if key_node.tag != _REJECTED_TAG:
                reader.problem(_line(key_node), KEY_NOT_NAME.format(got=_type_name(key_node)))
            good = False
            continue
        name = str(key_node.value)
        if problem := env_name_problem(name):
            reader.problem(_line(key_node), problem.format(key=_code(key), name=_code(name)))
            good = False
            continue
        if name in lines:
            shown = _code(f"{key}.{name}")
            reader.problem(_line(key_node), DUPLICATE_KEY.format(key=shown, first=lines[name]))
            good = False
            continue
        lines[name] = _line(key_node)
        if not isinstance(value_node, yaml.ScalarNode) or value_node.tag in (_NULL, _REJECTED_TAG):
            reader.mismatch(_code(f"{key}.{name}"), value_node, "a value (text or a number)")
            good = False
            continue
        values[name] = str(value_node.value)
    if len(values) > MAX_ENV_VARS:
        message = TOO_MANY_ENV.format(key=_code(key), count=len(values), limit=MAX_ENV_VARS)
        reader.problem(_line(node), message)
        return None
    return MappingProxyType(values) if good else None


def env_name_problem(name: str) -> str | None:
    """Return the message template for a variable name Box refuses, or None when it is fine."""
    if not ENV_NAME_RE.match(name):
        return BAD_ENV_NAME
    if name in RESERVED_ENV_NAMES:
        return RESERVED_ENV_NAME
    return None


def env_size(env: Mapping[str, str]) -> int:
    """Return the bytes of *env* as it is sent to Box (a JSON object)."""
    return len(json.dumps(dict(env), ensure_ascii=False).encode("utf-8", "surrogatepass"))


def _read_dollars(reader: _Reader, key: str, node: yaml.Node) -> float | None:
    return reader.dollars(key, node)


_FIELD_READERS: Mapping[str, Callable[[_Reader, str, yaml.Node], object]] = MappingProxyType(
    {
        "label": _read_label,
        "provider": _read_provider,
        "model": _read_string,
        "reasoning_effort": _read_string,
        "ttl_minutes": _read_ttl,
        "on_close": _read_on_close,
        "permission": _read_permission,
        "allowed_users": _read_logins,
        "denied_users": _read_logins,
        "instructions": _read_instructions,
        "prompt_file": _read_prompt_file,
        "max_active_boxes": _read_count,
        "max_runs_per_user_per_day": _read_count,
        "auto_fix_ci": _read_auto_fix_ci,
        "auto_fix_reviews": _read_auto_fix_reviews,
        "draft_pr": _read_bool,
        "show_desktop": _read_bool,
        "setup": _read_setup,
        "machine": _read_machine,
        "environment": _read_environment,
        "env": _read_env,
        "max_dollars_per_run": _read_dollars,
        "max_dollars_per_day": _read_dollars,
    }
)
KNOWN_KEYS = tuple(_FIELD_READERS)


def parse_repo_config(text: str | bytes, source: str = CONFIG_PATH) -> RepoConfig:
    """Parse one `box.yml`; raise `RepoConfigError` listing every problem found."""
    reader = _Reader(source)
    root = reader.compose(text)
    values = _read_top(reader, root) if root is not None else {}
    config = RepoConfig(source=source, lines=MappingProxyType(reader.lines), **values)
    agent = (_sourced(config, name) for name in ("provider", "model", "reasoning_effort"))
    reader.problems.extend(_agent_problems(*agent))
    if reader.problems:
        raise RepoConfigError(sorted(reader.problems, key=lambda problem: problem.line or 0))
    return config


def _read_top(reader: _Reader, root: yaml.Node) -> dict[str, Any]:
    if root.tag == _NULL:
        return {}
    if not isinstance(root, yaml.MappingNode):
        if root.tag != _REJECTED_TAG:
            reader.problem(_line(root), NOT_A_MAPPING.format(got=_type_name(root)))
        return {}
    values: dict[str, Any] = {}  # each reader returns the type of its RepoConfig field
    for name, line, node in reader.entries(root, KNOWN_KEYS):
        value = _FIELD_READERS[name](reader, name, node)
        if value is not None:
            values[name] = value
            reader.lines[name] = line
    return values


def merge_configs(
    defaults: Defaults, org: RepoConfig | None, repo: RepoConfig | None
) -> EffectiveConfig:
    """Merge the repository's config over the organisation's over the operator's defaults."""
    org, repo = org or RepoConfig(), repo or RepoConfig()
    provider, model, effort = _choose_agent(defaults, (org, repo))
    env = MappingProxyType({**(org.env or {}), **(repo.env or {})})
    problems = _agent_problems(provider, model, effort) + _env_problems(env, org, repo)
    if problems:
        raise RepoConfigError(problems)
    minutes = _pick(None, repo.ttl_minutes, org.ttl_minutes)
    fix = [config.auto_fix_ci or AutoFixCI() for config in (repo, org)]
    reviews = [config.auto_fix_reviews or AutoFixReviews() for config in (repo, org)]
    return EffectiveConfig(
        label=_pick(defaults.label, repo.label, org.label),
        provider=provider.value,
        model=None if model is None else model.value,
        reasoning_effort=None if effort is None else effort.value,
        ttl_seconds=defaults.ttl_seconds if minutes is None else minutes * 60,
        on_close=_pick(defaults.on_close, repo.on_close, org.on_close),
        permission=_pick("write", repo.permission, org.permission),
        allowed_users=_logins(_pick((), repo.allowed_users, org.allowed_users)),
        denied_users=_logins(_pick((), repo.denied_users, org.denied_users)),
        instructions=_pick("", repo.instructions, org.instructions),
        prompt_file=_pick(None, repo.prompt_file, org.prompt_file),
        max_active_boxes=_pick(None, repo.max_active_boxes, org.max_active_boxes),
        max_runs_per_user_per_day=_pick(
            None, repo.max_runs_per_user_per_day, org.max_runs_per_user_per_day
        ),
        auto_fix_ci_enabled=_pick(False, *(part.enabled for part in fix)),
        auto_fix_ci_max_attempts=_pick(DEFAULT_FIX_ATTEMPTS, *(part.max_attempts for part in fix)),
        auto_fix_reviews_enabled=_pick(False, *(part.enabled for part in reviews)),
        auto_fix_reviews_max_rounds=_pick(
            DEFAULT_REVIEW_ROUNDS, *(part.max_rounds for part in reviews)
        ),
        draft_pr=_pick(False, repo.draft_pr, org.draft_pr),
        show_desktop=_pick(False, repo.show_desktop, org.show_desktop),
        setup=_pick(defaults.setup, repo.setup, org.setup),
        machine=_pick(defaults.machine, repo.machine, org.machine),
        environment=_pick(defaults.environment, repo.environment, org.environment),
        env=env,
        max_dollars_per_run=_pick(None, repo.max_dollars_per_run, org.max_dollars_per_run),
        max_dollars_per_day=_pick(None, repo.max_dollars_per_day, org.max_dollars_per_day),
    )


def _env_problems(env: Mapping[str, str], org: RepoConfig, repo: RepoConfig) -> list[ConfigProblem]:
    """Check the variables of both files together against Box's count and size limits."""
    where = repo if repo.env else org
    line = where.lines.get("env")
    key = _code("env")
    if len(env) > MAX_ENV_VARS:
        message = TOO_MANY_ENV.format(key=key, count=len(env), limit=MAX_ENV_VARS)
        return [ConfigProblem(where.source, line, message + ENV_WITH_ORG)]
    if (size := env_size(env)) > MAX_ENV_BYTES:
        message = ENV_TOO_LARGE.format(key=key, size=size, limit=MAX_ENV_BYTES // 1024)
        return [ConfigProblem(where.source, line, message + ENV_WITH_ORG)]
    return []


def _pick(default: T, *values: T | None) -> T:
    """Return the first value that is set, else *default*."""
    return next((value for value in values if value is not None), default)


def _logins(logins: Iterable[str]) -> frozenset[str]:
    return frozenset(login.lower() for login in logins)


class _Sourced(NamedTuple):
    """A value with where it was set."""

    value: str
    source: str
    line: int | None

    def origin(self) -> str:
        """Say where the value was set."""
        if self.source == DEFAULTS_SOURCE:
            return DEFAULTS_SOURCE
        return f"`{self.source}`" + (f" line {self.line}" if self.line is not None else "")


def _sourced(config: RepoConfig, name: str) -> _Sourced | None:
    """Return the string value of *name* with where it was set, or None when not set."""
    value = getattr(config, name)
    if value is None:
        return None
    return _Sourced(str(value), config.source, config.lines.get(name))


def _choose_agent(
    defaults: Defaults, configs: Iterable[RepoConfig]
) -> tuple[_Sourced, _Sourced | None, _Sourced | None]:
    """Layer provider, model and effort from *configs* (lowest first) over *defaults*."""
    provider = _Sourced(
        PROVIDER_ALIASES.get(defaults.provider, defaults.provider), DEFAULTS_SOURCE, None
    )
    model = None if defaults.model is None else _Sourced(defaults.model, DEFAULTS_SOURCE, None)
    effort = None
    if defaults.reasoning_effort is not None:
        effort = _Sourced(defaults.reasoning_effort, DEFAULTS_SOURCE, None)
    for config in configs:
        chosen = _sourced(config, "provider")
        if chosen is not None and chosen.value != provider.value:
            offered = MODEL_CATALOGUE.get(chosen.value, {})
            model = model if model is not None and model.value in offered else None
            effort = effort if effort is not None and effort.value in _efforts(offered) else None
            provider = chosen
        model = _sourced(config, "model") or model
        effort = _sourced(config, "reasoning_effort") or effort
    return provider, model, effort


def _agent_problems(
    provider: _Sourced | None, model: _Sourced | None, effort: _Sourced | None
) -> list[ConfigProblem]:
    """Check a provider/model/effort combination; a None provider allows every provider."""
    if provider is not None and provider.value not in MODEL_CATALOGUE:
        choices = _codes(MODEL_CATALOGUE)
        message = UNKNOWN_PROVIDER.format(
            value=_code(provider.value), origin=provider.origin(), choices=choices
        )
        return [ConfigProblem(provider.source, provider.line, message)]
    models = ALL_MODELS if provider is None else MODEL_CATALOGUE[provider.value]
    problems = []
    if model is not None and model.value not in models:
        problems.append(_model_problem(provider, model, models))
        model = None
    if effort is not None and (problem := _effort_problem(provider, model, effort, models)):
        problems.append(problem)
    return problems


def _model_problem(
    provider: _Sourced | None, model: _Sourced, models: Mapping[str, tuple[str, ...]]
) -> ConfigProblem:
    choices = _codes(tuple(models))
    if provider is None:
        message = UNKNOWN_MODEL.format(value=_code(model.value), choices=choices)
    else:
        message = MODEL_NOT_FOR_PROVIDER.format(
            value=_code(model.value),
            provider=_code(provider.value),
            origin=provider.origin(),
            choices=choices,
        )
    return ConfigProblem(model.source, model.line, message + _suggest(model.value, tuple(models)))


def _efforts(models: Mapping[str, tuple[str, ...]]) -> frozenset[str]:
    """Return every effort that at least one of *models* takes."""
    return frozenset(name for efforts in models.values() for name in efforts)


def _effort_problem(
    provider: _Sourced | None,
    model: _Sourced | None,
    effort: _Sourced,
    models: Mapping[str, tuple[str, ...]],
) -> ConfigProblem | None:
    allowed = frozenset(models[model.value]) if model is not None else _efforts(models)
    if effort.value in allowed:
        return None
    choices = _codes(name for name in EFFORT_ORDER if name in allowed)
    value = _code(effort.value)
    if model is not None and not allowed:
        message = NO_EFFORT.format(model=_code(model.value), origin=model.origin())
    elif model is not None:
        message = EFFORT_NOT_FOR_MODEL.format(
            value=value, model=_code(model.value), origin=model.origin(), choices=choices
        )
    elif provider is not None:
        message = EFFORT_NOT_FOR_PROVIDER.format(
            value=value, provider=_code(provider.value), origin=provider.origin(), choices=choices
        )
    else:
        message = UNKNOWN_EFFORT.format(value=value, choices=choices)
    return ConfigProblem(effort.source, effort.line, message)
