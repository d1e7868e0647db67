"""The served OpenAPI document declares every error a route can give, with its body model,
so that clients generated from it know them."""

from __future__ import annotations

import pytest

#: route -> the error statuses it can answer (beyond 401, 422 and 503, which every API route can)
ERRORS = {
    ("post", "/process"): {404, 413},  # 404: the task vanished (cancelled) during a wait
    ("post", "/batch"): {413},
    ("get", "/status/{task_id}"): {404},
    ("get", "/results/{task_id}/{video_id}"): {404, 409},
    ("delete", "/tasks/{task_id}"): {404},
    ("get", "/tasks"): set(),
    ("get", "/extractors"): set(),
}


def resolve(document: dict, schema: dict) -> dict:
    ref = schema.get("$ref", "")
    return document["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else schema


@pytest.mark.parametrize(("method", "path"), list(ERRORS))
def test_every_error_status_is_declared_with_the_error_model(
    client, method: str, path: str
) -> None:
    document = client.get("/openapi.json").json()
    responses = document["paths"][path][method]["responses"]
    for code in ERRORS[method, path] | {401, 422, 503}:
        declared = responses.get(str(code))
        assert declared is not None, f"{method} {path} does not declare {code}"
        body = resolve(document, declared["content"]["application/json"]["schema"])
        assert "detail" in body["properties"], (method, path, code, body)
        if code == 422:
            items = resolve(document, body["properties"]["detail"]["items"])
            assert {"loc", "msg", "type"} <= set(items["properties"])


def test_readiness_declares_its_503(client) -> None:
    document = client.get("/openapi.json").json()
    assert "503" in document["paths"]["/readyz"]["get"]["responses"]
