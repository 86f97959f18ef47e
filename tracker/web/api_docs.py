"""/api/docs: the OpenAPI document rendered on the server as a page of the site.

Every route with its parameters, request body, answers and a curl example, then every
schema as a table of fields. No script at all: the page is plain HTML in the site's frame,
built from the same `openapi_document()` that /api/openapi.json serves, so it can never
describe another API than the one running.
"""

import json
import re
import shlex
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, request

from tracker import __version__
from tracker.api.spec import openapi_document
from tracker.web.pages import render_page

bp = Blueprint("api_docs", __name__)


@bp.get("/api/docs")
def index():
    document = openapi_document("Rebuild tracker API", __version__)
    base = request.url_root.rstrip("/")
    schemas = document["components"]["schemas"]
    operations = [
        _operation(path, method, operation, base, schemas)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]
    return render_page(
        "public/api_docs.html",
        document=document,
        operations=operations,
        schemas=[_schema(name, schema) for name, schema in sorted(schemas.items())],
        security={
            name: {**scheme, "parts": text_parts(scheme.get("description", ""))}
            for name, scheme in document["components"]["securitySchemes"].items()
        },
        base=base,
    )


def text_parts(text: str) -> list[tuple[bool, str]]:
    """`text` split on backticks: (is_code, words) pairs, for the template to escape."""
    return [(index % 2 == 1, part) for index, part in enumerate(text.split("`")) if part]


def type_of(schema: dict[str, Any]) -> str:
    """A schema in a few words: `string`, `integer ≥ 1`, `list of WorkIn`, `… or null`."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema or "oneOf" in schema:
        return " or ".join(type_of(s) for s in schema.get("anyOf", schema.get("oneOf")))
    if "const" in schema:
        return json.dumps(schema["const"], ensure_ascii=False)
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(v, ensure_ascii=False) for v in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        words = f"list of {type_of(schema.get('items', {}))}"
        if "minItems" in schema:
            words += f", at least {schema['minItems']}"
        return words
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"object of {type_of(schema['additionalProperties'])}"
    words = str(kind)
    if "format" in schema:
        words += f" ({schema['format']})"
    for key, sign in (("minimum", "≥"), ("maximum", "≤")):
        if key in schema:
            words += f" {sign} {schema[key]}"
    if "maxLength" in schema:
        words += f", at most {schema['maxLength']} characters"
    return words


def _schema(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    required = set(schema.get("required", []))
    variants = schema.get("oneOf") or schema.get("anyOf")
    return {
        "name": name,
        "description": text_parts(schema.get("description", "")),
        "variants": [type_of(v) for v in variants] if variants else [],
        "fields": [
            {
                "name": field,
                "type": type_of(prop),
                "required": field in required,
                "description": text_parts(prop.get("description", "")),
            }
            for field, prop in schema.get("properties", {}).items()
        ],
    }


def _named(answer: dict[str, Any]) -> str | None:
    """The schema an answer refers to, as itself or as its items, for a link to it."""
    schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
    ref = schema.get("$ref") or schema.get("items", {}).get("$ref")
    return ref.rsplit("/", 1)[-1] if ref else None


def _example(schema: dict[str, Any]) -> Any:
    return (schema.get("examples") or [None])[0]


def _operation(
    path: str, method: str, operation: dict[str, Any], base: str, schemas: dict[str, Any]
) -> dict[str, Any]:
    parameters = operation.get("parameters", [])
    shown_path = path
    query = {}
    for parameter in parameters:
        example = _example(parameter["schema"])
        if parameter["in"] == "path":
            shown_path = shown_path.replace("{" + parameter["name"] + "}", example or "ID")
        elif example is not None and (parameter["required"] or not query):
            query[parameter["name"]] = example
    url = base + shown_path + ("?" + urlencode(query) if query else "")
    command = ["curl"]
    if method != "get":
        command += ["-X", method.upper()]
    if operation.get("security"):
        scheme = next(iter(operation["security"][0]))
        if scheme == "agencyToken":
            command += ["-H", "Authorization: Bearer $TOKEN"]
        else:
            command += ["--cookie", "tracker_session=$SESSION"]
    body = operation.get("requestBody", {}).get("content", {})
    body_example = body.get("application/json", {}).get("example")
    if body_example is not None:
        text = json.dumps(body_example, ensure_ascii=False)
        command += ["-H", "Content-Type: application/json", "-d", text]
    curl = " ".join(
        # $TOKEN stays a shell variable; everything else is quoted as it must be.
        f'"{part}"' if "$" in part and "'" not in part and "{" not in part else shlex.quote(part)
        for part in [*command, url]
    )
    body_schema = body.get("application/json", {}).get("schema", {})
    body_name = type_of(body_schema) if body_schema else None
    return {
        "anchor": re.sub(r"[^a-z0-9]+", "-", f"{method} {path}".lower()).strip("-"),
        "method": method.upper(),
        "path": path,
        "summary": text_parts(operation.get("summary", "")),
        "description": [text_parts(p) for p in operation.get("description", "").split("\n\n")],
        "tags": operation.get("tags", []),
        "security": [next(iter(s)) for s in operation.get("security", [])],
        "parameters": [
            {
                "name": p["name"],
                "in": p["in"],
                "required": p["required"],
                "type": type_of(p["schema"]),
                "default": p["schema"].get("default"),
                "description": text_parts(p.get("description", "")),
                "example": _example(p["schema"]),
            }
            for p in parameters
        ],
        "body_types": list(body),
        "body_schema": _schema(body_name, schemas[body_name]) if body_name in schemas else None,
        "body_example": json.dumps(body_example, indent=2, ensure_ascii=False)
        if body_example is not None
        else None,
        "responses": [
            {
                "status": status,
                "description": answer.get("description", ""),
                "type": type_of(
                    answer.get("content", {}).get("application/json", {}).get("schema", {})
                ),
                "schema": _named(answer),
            }
            for status, answer in operation["responses"].items()
        ],
        "curl": curl,
    }
