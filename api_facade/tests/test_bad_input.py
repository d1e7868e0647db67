"""Malformed requests get a 422 whose body is valid JSON (strict: no NaN), and queue nothing."""

from __future__ import annotations

import json

import pytest

from audioproc_api.app import json_safe

NON_FINITE = ["NaN", "Infinity", "-Infinity"]
PROCESS_FIELDS = ["input_uri", "video_id", "extractors", "use_gpu", "sync"]
BATCH_BODIES = [
    '{{"items": {v}}}',
    '{{"items": [{v}]}}',
    '{{"items": [{{"input_uri": {v}, "video_id": "v"}}]}}',
    '{{"items": [{{"input_uri": "/x.wav", "video_id": {v}}}]}}',
    '{{"items": [{{"input_uri": "/x.wav", "video_id": "v", "extractors": [{v}]}}]}}',
    '{{"items": [{{"input_uri": "/x.wav", "video_id": "v"}}], "concurrency": {v}}}',
    '{{"items": [{{"input_uri": "/x.wav", "video_id": "v"}}], "use_gpu": {v}}}',
    '{{"items": [{{"input_uri": "/x.wav", "video_id": "v"}}], "extra": {v}}}',
]


def strict_json(text: str) -> object:
    """Parse as JSON proper: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} in a JSON body")

    return json.loads(text, parse_constant=refuse)


def assert_serialisable_422(response) -> list[dict]:
    assert response.status_code == 422, response.text
    detail = strict_json(response.text)["detail"]
    assert detail and all("loc" in d and "msg" in d for d in detail)
    return detail


@pytest.mark.parametrize("value", NON_FINITE)
@pytest.mark.parametrize("field", PROCESS_FIELDS)
def test_non_finite_numbers_in_any_process_field_are_422(client, field: str, value: str) -> None:
    body = {"input_uri": '"/x.wav"', "video_id": '"v"', field: value}
    raw = "{" + ", ".join(f'"{k}": {v}' for k, v in body.items()) + "}"
    detail = assert_serialisable_422(
        client.post("/process", content=raw, headers={"content-type": "application/json"})
    )
    assert any(field in d["loc"] for d in detail)
    assert client.get("/tasks").json()["tasks"] == []


@pytest.mark.parametrize("value", NON_FINITE)
@pytest.mark.parametrize("template", BATCH_BODIES)
def test_non_finite_numbers_anywhere_in_a_batch_are_422(client, template: str, value: str) -> None:
    raw = template.format(v=value)
    assert_serialisable_422(
        client.post("/batch", content=raw, headers={"content-type": "application/json"})
    )
    assert client.get("/tasks").json()["tasks"] == []


@pytest.mark.parametrize(
    "body", ["NaN", "Infinity", "[NaN]", '{"items": [NaN, Infinity, -Infinity]}']
)
def test_a_non_finite_body_itself_is_422(client, body: str) -> None:
    assert_serialisable_422(
        client.post("/batch", content=body, headers={"content-type": "application/json"})
    )


@pytest.mark.parametrize(
    "cursor",
    ["²", "١٢", "9223372036854775808", "99999999999999999999999", "-1", "1.5", "abc", " 1", ""],
)
def test_an_invalid_cursor_is_422(client, cursor: str) -> None:
    detail = assert_serialisable_422(client.get("/tasks", params={"cursor": cursor}))
    assert detail[0]["loc"] == ["query", "cursor"]


@pytest.mark.parametrize("timeout", ["nan", "inf", "-inf", "1e999"])
def test_non_finite_timeouts_are_not_server_errors(client, media, timeout: str) -> None:
    body = {"input_uri": str(media.good[0]), "video_id": "t", "extractors": ["loudness"]}
    response = client.post("/process", params={"wait": "true", "timeout": timeout}, json=body)
    assert response.status_code in (200, 202, 422), response.text
    strict_json(response.text)


def test_json_safe_carries_what_json_cannot() -> None:
    value = {
        "a": float("nan"),
        "b": [float("inf"), -float("inf"), b"\xff", b"ok"],
        1: ValueError("x"),
        "c": (1.5,),
    }
    assert json_safe(value) == {
        "a": "NaN",
        "b": ["Infinity", "-Infinity", "base64:/w==", "ok"],
        "1": "x",
        "c": [1.5],
    }
