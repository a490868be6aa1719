"""GitHub's OpenAPI description: match request paths to operations and validate bodies.

The description is OpenAPI 3.0, whose schema dialect is close to JSON Schema draft 7 except for
`nullable`, which is rewritten here into a `null` type. `$ref`s point into the whole document.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from jsonschema import Draft7Validator  # type: ignore[import-untyped]
from jsonschema.exceptions import ValidationError, best_match  # type: ignore[import-untyped]
from referencing import Registry
from referencing.jsonschema import DRAFT7

DEFAULT_SPEC_PATH = Path(__file__).with_name("rest-api-subset.json")
SPEC_URI = "urn:github:rest-api"
HTTP_METHODS = ("get", "put", "post", "patch", "delete", "head", "options")
# GitHub's contents API takes a file path with slashes in its `{path}` parameter.
MULTI_SEGMENT_PARAMS = frozenset({"path"})
MISSING_FIELD = "missing_field"
INVALID = "invalid"
MAX_MESSAGE = 200
REQUIRED_MESSAGE = re.compile(r"^'([^']+)' is a required property$")


@dataclass(frozen=True)
class BodyError:
    """One way a request body breaks the operation's schema, in GitHub's error terms."""

    field: str
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.field or '<body>'}: {self.message}"


@dataclass(frozen=True)
class _Route:
    method: str
    template: str
    operation_id: str
    pattern: re.Pattern[str]
    operation: dict[str, Any]


class OpenAPISpec:
    """Operations of an OpenAPI document, found by method and concrete path."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = _to_json_schema(document)
        self._registry: Registry[Any] = Registry().with_resource(
            SPEC_URI, DRAFT7.create_resource(self.document)
        )
        self._routes = sorted(
            _routes(self.document),
            key=lambda r: len(re.sub(r"\{[^}]+\}", "", r.template)),
            reverse=True,
        )
        self._by_id = {route.operation_id: route for route in self._routes}

    @classmethod
    def load(cls, path: str | Path = DEFAULT_SPEC_PATH) -> OpenAPISpec:
        """Read the description from a JSON file."""
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))

    def operations(self) -> list[tuple[str, str, str]]:
        """Return (METHOD, path template, operation id) for every operation."""
        return sorted((r.method.upper(), r.template, r.operation_id) for r in self._routes)

    def match(self, method: str, path: str) -> tuple[str, dict[str, str]] | None:
        """Return the operation id and decoded path parameters for a request, if any matches."""
        raw = urlsplit(path).path
        for route in self._routes:
            if route.method != method.lower():
                continue
            found = route.pattern.fullmatch(raw)
            if found:
                return route.operation_id, {k: unquote(v) for k, v in found.groupdict().items()}
        return None

    def documentation_url(self, operation_id: str) -> str:
        """Return the docs page of an operation."""
        docs: dict[str, str] = self._by_id[operation_id].operation.get("externalDocs", {})
        return docs.get("url", "https://docs.github.com/rest")

    def body_errors(self, method: str, path: str, body: Any) -> list[BodyError]:
        """Return how `body` breaks the request schema of the operation at `path`."""
        route = self._route(method, path)
        request_body = route.operation.get("requestBody")
        if request_body is None:
            return []
        if body is None:
            if request_body.get("required"):
                return [BodyError("", MISSING_FIELD, "a request body is required")]
            return []
        schema = request_body["content"]["application/json"]["schema"]
        return [_body_error(e) for e in self._validator(schema).iter_errors(body)]

    def validate_request(self, method: str, path: str, body: Any) -> list[str]:
        """Return messages for every way `body` breaks the operation's request schema."""
        return [str(error) for error in self.body_errors(method, path, body)]

    def validate_response(self, method: str, path: str, status: int, body: Any) -> list[str]:
        """Return messages for every way `body` breaks the documented response schema."""
        route = self._route(method, path)
        response = self._resolve(route.operation["responses"].get(str(status), {}))
        schema = response.get("content", {}).get("application/json", {}).get("schema")
        if schema is None:
            return []
        return [
            f"{'.'.join(map(str, e.absolute_path)) or '<body>'}: {e.message}"
            for e in self._validator(schema).iter_errors(body)
        ]

    def _route(self, method: str, path: str) -> _Route:
        matched = self.match(method, path)
        if matched is None:
            raise KeyError(f"no operation for {method.upper()} {path}")
        return self._by_id[matched[0]]

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            resolved: dict[str, Any] = self._registry.resolver().lookup(node["$ref"]).contents
            node = resolved
        return node

    def _validator(self, schema: dict[str, Any]) -> Any:
        return Draft7Validator(schema, registry=self._registry)


def _routes(document: dict[str, Any]) -> list[_Route]:
    routes = []
    for template, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                operation_id = operation["operationId"]
                routes.append(_Route(method, template, operation_id, _pattern(template), operation))
    return routes


def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    regex = ""
    for part in parts:
        if part.startswith("{"):
            name = part[1:-1]
            regex += f"(?P<{name}>.+)" if name in MULTI_SEGMENT_PARAMS else f"(?P<{name}>[^/]+)"
        else:
            regex += re.escape(part)
    return re.compile(regex)


def _to_json_schema(node: Any) -> Any:
    """Rewrite OpenAPI 3.0 `nullable` and document-relative `$ref`s for a JSON Schema validator."""
    if isinstance(node, list):
        return [_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _to_json_schema(value) for key, value in node.items() if key != "nullable"}
    if "nullable" in node and not isinstance(node["nullable"], bool):
        out["nullable"] = _to_json_schema(node["nullable"])
    ref = out.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        out["$ref"] = SPEC_URI + ref
    if node.get("nullable") is True:
        return _nullable(out)
    return out


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if isinstance(schema.get("type"), str) and "$ref" not in schema:
        schema["type"] = [schema["type"], "null"]
        if "enum" in schema and None not in schema["enum"]:
            schema["enum"] = [*schema["enum"], None]
        return schema
    return {"anyOf": [schema, {"type": "null"}]}


def _body_error(error: ValidationError) -> BodyError:
    if error.context:
        error = best_match(error.context)
    where = [str(part) for part in error.absolute_path]
    if error.validator == "required":
        named = REQUIRED_MESSAGE.match(error.message)
        missing = named.group(1) if named else ""
        return BodyError(
            ".".join([*where, missing] if missing else where), MISSING_FIELD, error.message
        )
    return BodyError(".".join(where), INVALID, _short_message(error))


def _short_message(error: ValidationError) -> str:
    """Describe an error without echoing a huge value back."""
    limit = error.validator_value
    if error.validator == "maxLength":
        return f"is too long (maximum is {limit} characters)"
    if error.validator == "maxItems":
        return f"has too many items (maximum is {limit})"
    message: str = error.message
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."
