"""Typed API routes and the OpenAPI 3.1 document generated from them.

Every /api/v1 route is declared with `endpoint(...)`, naming pydantic models for its query,
body and answer. The decorator parses and validates the query (a bad parameter is a 400
that names it), serialises the answer through its model, and records the route so that
`openapi_document()` describes exactly the routes that exist. A small generator over
pydantic's own JSON Schema is enough here and keeps the views plain Flask.
"""

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from flask import Blueprint, Response, jsonify, request
from pydantic import (
    BaseModel,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)

from tracker.clock import utc_iso
from tracker.errors import TrackerError

UtcTime = Annotated[
    datetime,
    PlainSerializer(utc_iso, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class RowErrorAnswer(BaseModel):
    row: int | None = Field(
        description="0-based index in the JSON list, or the CSV line "
        "where the record starts; null for the whole body"
    )
    field: str | None
    message: str


class ErrorAnswer(BaseModel):
    """A refused request; refused batches list every bad row in `errors`."""

    error: str
    errors: list[RowErrorAnswer] | None = None


@dataclass
class Endpoint:
    rule: str
    method: str
    summary: str
    description: str
    response: Any
    query: type[BaseModel] | None = None
    body: Any = None
    body_content_types: tuple[str, ...] = ("application/json",)
    status: int = 200
    errors: tuple[int, ...] = ()
    tags: tuple[str, ...] = ()
    auth: str | None = None
    body_example: Any = None
    path_examples: dict[str, str] = field(default_factory=dict)
    headers: tuple[dict[str, Any], ...] = ()
    adapter: TypeAdapter = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.adapter = TypeAdapter(self.response)


ENDPOINTS: list[Endpoint] = []
_PATH_ARG = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")


def endpoint(
    blueprint: Blueprint,
    rule: str,
    *,
    response: Any,
    query: type[BaseModel] | None = None,
    body: Any = None,
    body_content_types: tuple[str, ...] = ("application/json",),
    method: str = "GET",
    status: int = 200,
    errors: tuple[int, ...] = (),
    tags: tuple[str, ...] = (),
    auth: str | None = None,
    body_example: Any = None,
    path_examples: dict[str, str] | None = None,
    headers: tuple[dict[str, Any], ...] = (),
) -> Callable:
    """Register a typed route on `blueprint`; the view's docstring is its summary.

    `auth` names the scheme of SECURITY_SCHEMES a request must carry; `body_example` is a
    request body shown in the document (and on /api/docs)."""

    def decorator(view: Callable) -> Callable:
        doc = (view.__doc__ or "").strip()
        summary, _, description = doc.partition("\n")
        spec = Endpoint(
            rule=blueprint.url_prefix + rule if blueprint.url_prefix else rule,
            method=method,
            summary=summary.strip(),
            description=description.strip(),
            response=response,
            query=query,
            body=body,
            body_content_types=body_content_types,
            status=status,
            errors=errors,
            tags=tags,
            auth=auth,
            body_example=body_example,
            path_examples=path_examples or {},
            headers=headers,
        )
        ENDPOINTS.append(spec)

        @functools.wraps(view)
        def wrapper(**path_args: Any) -> Response:
            if query is not None:
                path_args["query"] = parse_query(query)
            result = view(**path_args)
            if isinstance(result, Response):
                return result
            answer = jsonify(
                spec.adapter.dump_python(spec.adapter.validate_python(result), mode="json")
            )
            answer.status_code = status
            return answer

        blueprint.add_url_rule(rule, view.__name__, wrapper, methods=[method])
        return view

    return decorator


def parse_query(model: type[BaseModel]) -> BaseModel:
    """The request's query string as `model`; a bad parameter is a 400 naming it."""
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            name = ".".join(str(part) for part in error["loc"]) or "query"
            message = error["msg"].removeprefix("Value error, ")  # our own validators' words
            problems.append(f"parameter {name!r}: {message}")
        raise TrackerError("; ".join(problems)) from None


def openapi_document(title: str, version: str) -> dict[str, Any]:
    """OpenAPI 3.1 description of every registered route."""
    components: dict[str, Any] = {}

    def schema_of(
        annotation: Any, mode: str = "serialization", named: bool = False
    ) -> dict[str, Any]:
        schema = TypeAdapter(annotation).json_schema(
            ref_template="#/components/schemas/{model}", mode=mode
        )
        components.update(schema.pop("$defs", {}))
        if named and schema.get("type") == "object" and "title" in schema:
            # A model answer or body: a named schema, so tools and /api/docs can refer to it.
            components[schema["title"]] = schema
            return {"$ref": f"#/components/schemas/{schema['title']}"}
        return schema

    error_schema = schema_of(ErrorAnswer)
    components["ErrorAnswer"] = error_schema
    error_ref = {"$ref": "#/components/schemas/ErrorAnswer"}
    paths: dict[str, Any] = {}
    for spec in ENDPOINTS:
        path = _PATH_ARG.sub(r"{\1}", spec.rule)
        parameters = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string"}
                | ({"examples": [spec.path_examples[name]]} if name in spec.path_examples else {}),
            }
            for name in _PATH_ARG.findall(spec.rule)
        ]
        if spec.query is not None:
            parameters += _query_parameters(schema_of(spec.query, "validation"))
        parameters += [{"in": "header", "required": False, **h} for h in spec.headers]
        operation: dict[str, Any] = {
            "summary": spec.summary,
            "operationId": f"{spec.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', path.lower())}",
            "responses": {
                str(spec.status): {
                    "description": "OK",
                    "content": {
                        "application/json": {"schema": schema_of(spec.response, named=True)}
                    },
                },
                **{
                    str(code): {
                        "description": _ERROR_TEXT.get(code, "Refused"),
                        "content": {"application/json": {"schema": error_ref}},
                    }
                    for code in sorted({400, *spec.errors})
                },
            },
        }
        if spec.description:
            operation["description"] = spec.description
        if spec.tags:
            operation["tags"] = list(spec.tags)
        if spec.auth:
            operation["security"] = [{spec.auth: []}]
        if parameters:
            operation["parameters"] = parameters
        if spec.body is not None:
            body_schema = schema_of(spec.body, "validation", named=True)
            operation["requestBody"] = {
                "required": True,
                "content": {
                    content_type: {
                        "schema": body_schema
                        if "json" in content_type
                        else {
                            "type": "string",
                            "minLength": 1,
                            "description": "a header line, then rows",
                        },
                        **(
                            {"example": spec.body_example}
                            if spec.body_example is not None and "json" in content_type
                            else {}
                        ),
                    }
                    for content_type in spec.body_content_types
                },
            }
        paths.setdefault(path, {})[spec.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": SECURITY_SCHEMES},
    }


SECURITY_SCHEMES = {
    "agencyToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "An agency's API token, `Authorization: Bearer TOKEN`. An official "
        "issues it on /admin or with `tracker agency token AGENCY`; it writes only that "
        "agency's measures and works. No or an unknown token: 401.",
    },
    "officialSession": {
        "type": "apiKey",
        "in": "cookie",
        "name": "tracker_session",
        "description": "The session cookie of an official signed in on the web (/login). "
        "Not signed in: 401; signed in without the official role: 403.",
    },
}


_ERROR_TEXT = {
    400: "Bad request: a parameter is missing or invalid",
    401: "No or unknown token",
    403: "Not allowed for this agency or user",
    404: "Not found",
    409: "Conflict",
    413: "Body too large",
    415: "Unsupported content type",
    422: "Invalid rows; nothing was stored",
}


def _query_parameters(schema: dict[str, Any]) -> list[dict[str, Any]]:
    required = set(schema.get("required", []))
    return [
        {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": {k: v for k, v in prop.items() if k not in ("title", "description")},
            **({"description": prop["description"]} if "description" in prop else {}),
        }
        for name, prop in schema.get("properties", {}).items()
    ]
