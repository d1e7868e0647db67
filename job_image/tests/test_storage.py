"""Storage: local atomic writes, and S3 through boto3 against moto's server on loopback."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from botocore.exceptions import ConnectionClosedError

from audioproc.errors import InputNotFoundError, InvalidRequestError, OutputError, StorageError
from audioproc.models.manifest import AudioInfo, Manifest, SourceAudioInfo
from audioproc.s3 import make_s3_client
from audioproc.settings import PipelineSettings
from audioproc.sources import open_input
from audioproc.storage import (
    LocalStorage,
    S3Storage,
    check_video_id,
    open_storage,
    probe_output,
    read_manifest,
)

BUCKET = "results"


def make_manifest(video_id: str = "vid-1") -> Manifest:
    return Manifest(
        video_id=video_id,
        input_uri="/media/x.mp4",
        created_at=datetime.now(UTC),
        device="cpu",
        extractors=[],
        audio=AudioInfo(
            duration_s=1.0,
            sample_rate=16000,
            source=SourceAudioInfo(codec="aac", sample_rate=44100, channels=2),
        ),
    )


# --------------------------------------------------------------------------- local


def test_local_write_then_read(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path / "out"))
    beats = np.array([0.5, 1.0, 1.5])

    uri = storage.write_item("vid-1", make_manifest(), {"tempo.beats.npy": beats})

    assert uri == (tmp_path / "out" / "vid-1" / "manifest.json").as_uri()
    assert read_manifest(uri).video_id == "vid-1"
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "vid-1" / "tempo.beats.npy"), beats)
    assert not [p for p in (tmp_path / "out" / "vid-1").iterdir() if p.name.endswith(".tmp")]


def test_local_failed_artifact_leaves_no_manifest(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.write_item("vid-1", make_manifest(), {"a.npy": np.zeros(3)})
    (
        tmp_path / "vid-1" / "b.npy"
    ).mkdir()  # a directory where the artifact must go: the write fails

    with pytest.raises(StorageError, match="cannot write results of 'vid-1'"):
        storage.write_item("vid-1", make_manifest(), {"b.npy": np.zeros(3)})

    assert not (
        tmp_path / "vid-1" / "manifest.json"
    ).exists()  # the old one is gone too: it no longer matches


def test_file_uri_output(tmp_path: Path) -> None:
    storage = open_storage((tmp_path / "o").as_uri())
    assert (
        storage.write_item("v", make_manifest("v"), {})
        == (tmp_path / "o" / "v" / "manifest.json").as_uri()
    )


@pytest.mark.parametrize(
    "video_id",
    [
        "../escape",
        "a/b",
        "",
        ".hidden",
        "x" * 129,
        "abc\n",
        "abc\n\n",
        "\nabc",
        "abc\r",
        "a\x00",
        "ab c",
        "abc\u2028",
        "x" * 128 + "\n",
    ],
)
def test_video_ids_that_are_not_one_path_segment_are_refused(tmp_path: Path, video_id: str) -> None:
    with pytest.raises(InvalidRequestError, match="invalid video id"):
        LocalStorage(tmp_path).write_item(video_id, make_manifest(), {})
    assert not any(tmp_path.iterdir())


def test_valid_video_ids_pass() -> None:
    for video_id in ("a", "vid-001", "A.b_c-9", "x" * 128):
        check_video_id(video_id)


def test_unsupported_output() -> None:
    with pytest.raises(ValueError, match="use a directory, file:///dir or s3://bucket/prefix"):
        open_storage("ftp://x/y")


# --------------------------------------------------------------------------- S3 (moto server on loopback)


# --------------------------------------------------------------------------- probe_output


def test_probe_creates_a_missing_output_and_leaves_nothing(tmp_path: Path) -> None:
    probe_output(str(tmp_path / "a" / "b"))
    probe_output((tmp_path / "c").as_uri())
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "c"]


@pytest.mark.parametrize("where", ["file", "file/sub", "file/sub/deeper"])
def test_probe_refuses_a_file_where_a_directory_must_be(tmp_path: Path, where: str) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(
        OutputError,
        match=f"cannot write results under {tmp_path / where}: {tmp_path / 'file'} is not a directory",
    ):
        probe_output(str(tmp_path / where))


@pytest.mark.parametrize("uri", ["ftp://host/out", "s3://", "gs://bucket/x"])
def test_probe_refuses_malformed_outputs(uri: str) -> None:
    with pytest.raises(OutputError, match="output"):
        probe_output(uri)


def _probe_as_nobody(directory: Path) -> tuple[int, str]:
    """probe_output in a forked child that dropped root (root writes anywhere): (exit status, message)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            probe_output(str(directory))
            status = 0
        except OutputError as exc:
            os.write(write_end, str(exc).encode())
            status = 2
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), message


@pytest.mark.skipif(
    os.geteuid() != 0, reason="drops root in a child process to meet a permission check"
)
def test_probe_refuses_a_read_only_directory() -> None:
    public = Path(tempfile.mkdtemp(prefix="audioproc-ro-"))  # under /tmp: reachable by any user
    try:
        (public / "ro").mkdir()
        (public / "rw").mkdir()
        public.chmod(0o755)
        (public / "ro").chmod(0o555)
        (public / "rw").chmod(0o777)
        assert _probe_as_nobody(public / "rw") == (0, "")
        for target in (public / "ro", public / "ro" / "run-1"):
            status, message = _probe_as_nobody(target)
            assert status == 2 and message.startswith(
                f"cannot write results under {target}: Permission denied"
            )
        assert not any((public / "ro").iterdir())
    finally:
        shutil.rmtree(public)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_settings(s3_endpoint: str, settings: PipelineSettings) -> PipelineSettings:
    s3 = settings.model_copy(
        update={
            "s3_endpoint_url": s3_endpoint,
            "s3_access_key_id": "test",
            "s3_secret_access_key": "test",
            "s3_max_attempts": 4,
        }
    )
    client = make_s3_client(s3)
    if BUCKET not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=BUCKET)
    return s3


def _keys(settings: PipelineSettings, prefix: str) -> set[str]:
    listing = make_s3_client(settings).list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"] for o in listing.get("Contents", [])}


def _fail_puts(storage: S3Storage, *, key_suffix: str, times: int) -> list[str]:
    """Make the first ``times`` PutObject requests for keys ending in ``key_suffix`` fail.

    The failure is a dropped connection raised where botocore sends the HTTP request
    (the ``before-send`` event), so botocore's own retry logic sees it as it would see a
    network fault; the request never reaches the server.
    """
    attempts: list[str] = []

    def before_send(request, **_: object) -> None:
        if request.url.split("?")[0].endswith(key_suffix):
            attempts.append(request.url)
            if len(attempts) <= times:
                raise ConnectionClosedError(endpoint_url=request.url)

    storage.client.meta.events.register("before-send.s3.PutObject", before_send)
    return attempts


def test_s3_write_then_read(s3_settings: PipelineSettings) -> None:
    storage = open_storage(f"s3://{BUCKET}/runs/a", s3_settings)
    beats = np.array([0.25, 0.75])

    uri = storage.write_item("vid-1", make_manifest(), {"tempo.beats.npy": beats})

    assert uri == f"s3://{BUCKET}/runs/a/vid-1/manifest.json"
    assert read_manifest(uri, s3_settings).video_id == "vid-1"
    assert _keys(s3_settings, "runs/a/") == {
        "runs/a/vid-1/manifest.json",
        "runs/a/vid-1/tempo.beats.npy",
    }
    assert storage.read_manifest("vid-1") is not None and storage.read_manifest("other") is None


def test_s3_failed_upload_is_retried(s3_settings: PipelineSettings) -> None:
    storage = open_storage(f"s3://{BUCKET}/runs/retry", s3_settings)
    attempts = _fail_puts(storage, key_suffix="tempo.beats.npy", times=2)

    uri = storage.write_item("vid-1", make_manifest(), {"tempo.beats.npy": np.arange(4.0)})

    assert len(attempts) == 3  # two dropped connections, then success
    assert read_manifest(uri, s3_settings).video_id == "vid-1"


def test_s3_partial_failure_leaves_no_manifest(s3_settings: PipelineSettings) -> None:
    storage = open_storage(f"s3://{BUCKET}/runs/partial", s3_settings)
    storage.write_item(
        "vid-1", make_manifest(), {"a.npy": np.zeros(2)}
    )  # an earlier, complete result
    attempts = _fail_puts(storage, key_suffix="b.npy", times=100)

    with pytest.raises(StorageError, match="after retries"):
        storage.write_item("vid-1", make_manifest(), {"a.npy": np.ones(2), "b.npy": np.ones(2)})

    assert len(attempts) == s3_settings.s3_max_attempts
    assert "runs/partial/vid-1/manifest.json" not in _keys(s3_settings, "runs/partial/")


def test_s3_input_is_downloaded(s3_settings: PipelineSettings, media: Path) -> None:
    make_s3_client(s3_settings).upload_file(str(media / "tone.mp4"), BUCKET, "inputs/tone.mp4")
    with open_input(f"s3://{BUCKET}/inputs/tone.mp4", s3_settings) as path:
        assert path.read_bytes() == (media / "tone.mp4").read_bytes()


def test_s3_missing_input(s3_settings: PipelineSettings) -> None:
    with pytest.raises(InputNotFoundError, match="not found: S3 404"):
        with open_input(f"s3://{BUCKET}/inputs/missing.mp4", s3_settings):
            pass


def test_probe_s3_output(s3_settings: PipelineSettings) -> None:
    probe_output(f"s3://{BUCKET}/probe/run", s3_settings)
    assert _keys(s3_settings, "probe/") == set()  # the probe object is deleted again


def test_probe_refuses_a_missing_bucket(s3_settings: PipelineSettings) -> None:
    with pytest.raises(
        OutputError,
        match="cannot write results to s3://no-such-bucket/run: S3 NoSuchBucket .* on PutObject",
    ):
        probe_output("s3://no-such-bucket/run", s3_settings)


def test_probe_refuses_a_bucket_that_denies_writes(s3_settings: PipelineSettings) -> None:
    client = make_s3_client(s3_settings)
    client.create_bucket(Bucket="read-only")
    client.put_bucket_policy(
        Bucket="read-only",
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:PutObject",
                        "Resource": "arn:aws:s3:::read-only/*",
                    }
                ],
            }
        ),
    )
    with pytest.raises(
        OutputError,
        match=r"cannot write results to s3://read-only/run: S3 (AccessDenied|403) .* on PutObject",
    ):
        probe_output("s3://read-only/run", s3_settings)


def test_probe_refuses_an_unreachable_endpoint(settings: PipelineSettings) -> None:
    unreachable = settings.model_copy(
        update={
            "s3_endpoint_url": f"http://127.0.0.1:{_free_port()}",
            "s3_access_key_id": "test",
            "s3_secret_access_key": "test",
            "s3_max_attempts": 1,
        }
    )
    with pytest.raises(
        OutputError, match="cannot write results to s3://bucket/run .*Could not connect"
    ):
        probe_output("s3://bucket/run", unreachable)


def test_runner_writes_to_s3(
    s3_settings: PipelineSettings, media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline_fakes

    from audioproc.runner import ItemRequest, process_items

    pipeline_fakes.register(monkeypatch)
    items = [
        ItemRequest(str(media / "tone.webm"), "web", ["test_rms"]),
        ItemRequest(str(media / "garbage.mp4"), "bad", ["test_rms"]),
    ]

    ok, bad = process_items(items, f"s3://{BUCKET}/runs/runner", device="cpu", settings=s3_settings)

    assert ok.manifest_uri == f"s3://{BUCKET}/runs/runner/web/manifest.json"
    assert read_manifest(ok.manifest_uri, s3_settings).extractors[0].artifacts == {
        "envelope": "test_rms.envelope.npy"
    }
    assert bad.status == "error"
    assert _keys(s3_settings, "runs/runner/") == {
        "runs/runner/web/manifest.json",
        "runs/runner/web/test_rms.envelope.npy",
    }


def test_item_list_on_s3_is_written_whole_and_read_from_a_byte_offset(
    s3_settings: PipelineSettings,
) -> None:
    """An itemsFrom list on S3: the facade's put, the operator's scan, a pod's ranged read."""
    from audioproc.models.audiojob import AudioJobItem
    from audioproc.models.pod_contract import item_list_bytes, read_item_at, scan_item_list
    from audioproc.storage import open_stream, write_object

    uri = f"s3://{BUCKET}/lists/job.jsonl"
    listed = [AudioJobItem(input_uri=f"s3://media/{i}.mp4", video_id=f"v{i}") for i in range(2500)]
    write_object(uri, item_list_bytes(listed), s3_settings)
    with open_stream(uri, 0, s3_settings) as stream:
        found = scan_item_list(stream, uri, chunk_size=1000)
    assert found.count == 2500 and found.chunk_starts == [0, 1000, 2000]
    with open_stream(uri, found.chunk_offsets[2], s3_settings) as stream:
        assert read_item_at(stream, uri, 2000, 499) == listed[2499]
    with pytest.raises(StorageError, match="cannot read"):
        open_stream(f"s3://{BUCKET}/lists/missing.jsonl", 0, s3_settings)
