"""The OpenAPI document states the limits that come from the settings (they are not known when
the request models are defined), so clients and fuzzers see every constraint the API enforces."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.validation import STORABLE_JSON_MARK
from embedq_core.settings import Settings


def _limits(settings: Settings) -> dict[tuple[str, str], dict[str, Any]]:
    """(schema, property) -> JSON-schema keywords to add."""
    return {
        ("JobIn", "items"): {"maxItems": settings.max_items_per_job},
        ("ItemIn", "id"): {"maxLength": settings.max_id_chars},
        ("ItemIn", "text"): {"maxLength": settings.max_text_chars},
        ("EmbeddingsIn", "input"): {"minItems": 1, "maxItems": settings.max_inputs_per_request},
        ("SearchIn", "query"): {"maxLength": settings.max_text_chars},
        ("RerankIn", "query"): {"maxLength": settings.max_text_chars},
        ("RerankIn", "documents"): {"maxItems": settings.max_inputs_per_request},
        ("DocumentIn", "text"): {"maxLength": settings.max_text_chars},
    }


def _storable_json(settings: Settings) -> dict[str, Any]:
    """JSON that jsonb can store: no NUL in strings or keys, keys of bounded length."""
    value = {"$ref": "#/components/schemas/StorableJsonValue"}
    no_nul = r"^[^\x00]*$"
    return {
        "StorableJsonObject": {
            "type": "object",
            "propertyNames": {"pattern": no_nul, "maxLength": settings.max_json_key_chars},
            "additionalProperties": value,
            "description": f"nested at most {settings.max_json_depth} levels, at most "
            f"{settings.max_json_values} values in all",
        },
        "StorableJsonValue": {
            "anyOf": [
                {"type": "string", "pattern": no_nul},
                {"type": "number"},
                {"type": "boolean"},
                {"type": "null"},
                {"type": "array", "items": value},
                {"$ref": "#/components/schemas/StorableJsonObject"},
            ]
        },
    }


def _point_at_storable_json(node: Any) -> None:
    """Replace each marked placeholder with a reference to the recursive schema (OpenAPI 3.1
    keeps the siblings of a $ref: title, description, default)."""
    children = node.items() if isinstance(node, dict) else enumerate(node)
    for key, child in list(children):
        if isinstance(child, dict) and child.get(STORABLE_JSON_MARK):
            kept = {k: v for k, v in child.items() if k not in (STORABLE_JSON_MARK, "type")}
            node[key] = {**kept, "$ref": "#/components/schemas/StorableJsonObject"}
        elif isinstance(child, dict | list):
            _point_at_storable_json(child)


def install_openapi_limits(app: FastAPI, settings: Settings) -> None:
    """Replace app.openapi with one that adds the settings' limits to the generated schema."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            components = schema.get("components", {}).get("schemas", {})
            components.update(_storable_json(settings))
            _point_at_storable_json(schema)
            for (model, field), keywords in _limits(settings).items():
                prop = components[model]["properties"][field]
                # `input` is a string or an array: the item limit applies to the array form.
                for target in prop.get("anyOf", [prop]):
                    if target.get("type") == "array" or "maxItems" not in keywords:
                        target.update(keywords)
            # Each text of `input`, the string and each string of the array, has the per-text
            # limit.
            for target in components["EmbeddingsIn"]["properties"]["input"].get("anyOf", []):
                text = target.get("items", target)
                if text.get("type") == "string":
                    text["maxLength"] = settings.max_text_chars
            # A rerank document given as a plain string: the same per-text limit.
            documents = components["RerankIn"]["properties"]["documents"]["items"]
            for target in documents.get("anyOf", [documents]):
                if target.get("type") == "string":
                    target["maxLength"] = settings.max_text_chars
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
