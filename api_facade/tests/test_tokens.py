"""The tokens file: its parser, failing closed, and per-token scopes (local backend)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audioproc_api.auth import Caller, TokensFileError, parse_tokens
from tests.facade_support import FAST_EXTRACTORS, Media, local_settings, make_client, wait_finished

# -- the parser ------------------------------------------------------------------------------

names = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,20}[A-Za-z0-9])?", fullmatch=True)
tokens = st.from_regex(r"[!-9;-~]{1,40}", fullmatch=True).filter(lambda t: not t.startswith("#"))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_parsing_any_text_gives_tokens_or_one_clear_error(text: str) -> None:
    try:
        callers = parse_tokens(text)
    except TokensFileError as exc:
        message = str(exc)
        assert message.startswith("line ") and "\n" not in message
    else:
        assert all(isinstance(c, Caller) for c in callers.values())


entries = st.tuples(st.none() | names, tokens, st.booleans()).map(
    lambda e: (e[0], e[1], e[2] and e[0] is not None)
)  # only a named token can be admin


@settings(max_examples=200, deadline=None)
@given(st.lists(entries, max_size=20, unique_by=lambda e: e[1]), st.booleans())
def test_named_plain_and_admin_lines_round_trip(entries: list, with_comments: bool) -> None:
    lines = []
    for name, token, admin in entries:
        lines.append(token if name is None else f"{name}:{token}" + (":admin" if admin else ""))
        if with_comments:
            lines += ["# a comment", "   "]
    parsed = parse_tokens("\n".join(lines))
    assert parsed == {token: Caller(name, admin) for name, token, admin in entries}


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("ok\na:b:c:d\n", 2, "expected"),
        ("a:b:superuser", 1, "third field"),
        ("bad name:tok", 1, "name"),
        ("-a:tok", 1, "name"),
        ("a:", 1, "token"),
        (":tok", 1, "name"),
        ("tok\nalice:tok", 2, "already listed"),
        ("tök", 1, "token"),
    ],
)
def test_an_invalid_line_is_named(text: str, line: int, what: str) -> None:
    with pytest.raises(TokensFileError, match=f"^line {line}: .*{what}"):
        parse_tokens(text)


# -- failing closed ----------------------------------------------------------------------------


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_start_up_refuses_a_missing_or_invalid_tokens_file(tmp_path: Path, media: Media) -> None:
    with pytest.raises(TokensFileError, match="cannot be read"):
        make_client(local_settings(tmp_path, media, api_tokens_file=tmp_path / "missing"))
    (tmp_path / "bad").write_text("a:b:c:d\n")
    with pytest.raises(TokensFileError, match="invalid: line 1"):
        make_client(local_settings(tmp_path, media, api_tokens_file=tmp_path / "bad"))


@pytest.mark.parametrize("break_file", ["moved", "directory", "invalid", "not utf-8"])
def test_a_tokens_file_gone_bad_keeps_the_last_good_tokens_and_fails_readiness(
    tmp_path: Path, media: Media, break_file: str
) -> None:
    path = tmp_path / "tokens"
    path.write_text("alice:alice-token\n")
    with make_client(local_settings(tmp_path, media, api_tokens_file=path)) as client:
        assert client.get("/readyz").status_code == 200
        if break_file == "moved":
            path.rename(tmp_path / "elsewhere")
        elif break_file == "directory":
            path.unlink()
            path.mkdir()
        elif break_file == "invalid":
            path.write_text("alice:alice-token:root\n")
        else:
            path.write_bytes(b"alice:\xff\xfe\n")

        assert client.get("/tasks", headers=auth("alice-token")).status_code == 200  # last good set
        assert client.get("/tasks", headers=auth("other")).status_code == 401
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "API_TOKENS_FILE" in ready.json()["detail"]

        if path.is_dir():
            path.rmdir()
        path.write_text("bob:bob-token\n")  # fixed: the new set applies and the service is ready
        assert client.get("/readyz").status_code == 200
        assert client.get("/tasks", headers=auth("bob-token")).status_code == 200
        assert client.get("/tasks", headers=auth("alice-token")).status_code == 401


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc"])
def test_the_api_document_and_its_viewers_need_a_token_when_tokens_are_on(
    tmp_path: Path, media: Media, path: str
) -> None:
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text("alice:alice-token\n")
    with make_client(local_settings(tmp_path, media, api_tokens_file=tokens_file)) as client:
        assert client.get(path).status_code == 401
        assert client.get(path, headers=auth("alice-token")).status_code == 200


# -- scopes ------------------------------------------------------------------------------------


def test_a_token_sees_and_cancels_only_its_own_tasks_unless_admin(
    tmp_path: Path, media: Media
) -> None:
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(
        "alice:alice-token\nbob:bob-token\nops:ops-token:admin\nshared-1\nshared-2\n"
    )
    with make_client(local_settings(tmp_path, media, api_tokens_file=tokens_file)) as client:

        def submit(token: str, video_id: str) -> str:
            body = {
                "input_uri": str(media.good[0]),
                "video_id": video_id,
                "extractors": FAST_EXTRACTORS,
            }
            response = client.post("/process", json=body, headers=auth(token))
            assert response.status_code == 202, response.text
            return response.json()["task_id"]

        alices, bobs, shared = (
            submit("alice-token", "a"),
            submit("bob-token", "b"),
            submit("shared-1", "s"),
        )
        done = wait_finished(client, alices, headers=auth("alice-token"))
        assert done["submitter"] == "alice"

        def listed(token: str) -> set[str]:
            return {t["task_id"] for t in client.get("/tasks", headers=auth(token)).json()["tasks"]}

        assert listed("alice-token") == {alices}
        assert listed("bob-token") == {bobs}
        assert listed("shared-2") == {shared}  # one tenant: every plain token sees its tasks
        assert listed("ops-token") == {alices, bobs, shared}
        submitters = {
            t["task_id"]: t["submitter"]
            for t in client.get("/tasks", headers=auth("ops-token")).json()["tasks"]
        }
        assert submitters == {alices: "alice", bobs: "bob", shared: None}

        # another tenant's task does not exist, for every route that names it
        for token in ("bob-token", "shared-1"):
            assert client.get(f"/status/{alices}", headers=auth(token)).status_code == 404
            assert client.get(f"/results/{alices}/a", headers=auth(token)).status_code == 404
            assert client.delete(f"/tasks/{alices}", headers=auth(token)).status_code == 404
        assert client.get(f"/results/{alices}/a", headers=auth("alice-token")).status_code == 200
        assert client.get(f"/status/{bobs}", headers=auth("ops-token")).status_code == 200
        assert client.delete(f"/tasks/{bobs}", headers=auth("ops-token")).status_code == 200
        assert client.delete(f"/tasks/{shared}", headers=auth("shared-2")).status_code == 200
        assert listed("ops-token") == {alices}
