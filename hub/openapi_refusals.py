"""The hub's OpenAPI spec tells the truth about its 422 answers.

FastAPI declares every 422 as its own request-validation list (``HTTPValidationError``),
but the hub's handlers also refuse a well-formed request with a reason code:
``{"detail": {"reason": "bad_cursor", ...}}`` (``hub.context.bad_request``). Schemathesis
found the spec contradicting those answers on 30 operations; a client generated from the
spec would fail to parse them. ``declare_refusals`` widens each declared 422 to either shape
and adds the ``Refusal`` schema (also what 401/403/404/429 bodies look like). No I/O.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

REFUSAL: dict[str, Any] = {
    "title": "Refusal",
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {
            "type": "object",
            "required": ["reason"],
            "properties": {"reason": {"type": "string", "description": "a fixed code"}},
            "additionalProperties": True,
        },
    },
    "description": "A refused request: a reason code and, per reason, the fields that help.",
}
_REF = {"$ref": "#/components/schemas/Refusal"}


def widen_422(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (an OpenAPI document) with every 422 body as validation list or Refusal."""
    schema.setdefault("components", {}).setdefault("schemas", {})["Refusal"] = REFUSAL
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            response = operation.get("responses", {}).get("422") if isinstance(
                operation, dict) else None
            if not response:
                continue
            media = response.setdefault("content", {}).setdefault("application/json", {})
            declared = media.get("schema")
            if declared is None:
                media["schema"] = _REF
            elif _REF not in declared.get("anyOf", []):
                media["schema"] = {"anyOf": [declared, _REF]}
            response["description"] = "Validation error, or a refusal with a reason code"
    return schema


def declare_refusals(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the widened spec (built once, like FastAPI's own)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if getattr(app, "_refusals_declared", False) and app.openapi_schema:
            return app.openapi_schema
        app.openapi_schema = widen_422(build())
        app._refusals_declared = True  # type: ignore[attr-defined]
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
