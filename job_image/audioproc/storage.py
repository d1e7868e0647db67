"""Where manifests and artifacts go: a local directory (default) or an S3 prefix.

Layout: ``<base>/<video_id>/manifest.json`` with the artifacts (``.npy``) beside it.

Writes are ordered so that a manifest that exists is always complete: an earlier manifest
of the same item is removed first, then the artifacts are written, then the manifest
last. Locally each file is written to a temporary name and renamed into place (atomic
on POSIX); on S3 each object is put whole (S3 never shows a partial object) and a failed
artifact upload (after botocore's retries with backoff) raises before the manifest is put.

:func:`probe_output` checks once, before any work, that results can be written (a
read-only directory, a file where a directory must be, an S3 bucket refusing writes).

The read side (:func:`read_manifest`, :func:`open_storage`, ``manifest_uri``) and
:func:`probe_output` import nothing heavy (boto3 only for s3 outputs): the facade uses them.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol
from urllib.parse import unquote, urlsplit

from audioproc.errors import InvalidRequestError, OutputError, StorageError
from audioproc.models.audiojob import VIDEO_ID_PATTERN
from audioproc.models.manifest import Manifest
from audioproc.models.pod_contract import MANIFEST_NAME, manifest_uri

if TYPE_CHECKING:
    import numpy as np
    from mypy_boto3_s3 import S3Client  # boto3-stubs (dev extra): types only

    from audioproc.settings import PipelineSettings

_VIDEO_ID = re.compile(VIDEO_ID_PATTERN)


def check_video_id(video_id: str) -> None:
    """Raise InvalidRequestError unless ``video_id`` is safe as one path segment (VIDEO_ID_PATTERN)."""
    # fullmatch: with match, the pattern's "$" also matches before a final newline ("abc\n").
    if not isinstance(video_id, str) or not _VIDEO_ID.fullmatch(video_id):
        raise InvalidRequestError(
            f"invalid video id {video_id!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


class Storage(Protocol):
    #: ``file:///abs/dir`` or ``s3://bucket/prefix``
    base_uri: str

    def manifest_uri(self, video_id: str) -> str: ...

    def write_item(
        self, video_id: str, manifest: Manifest, artifacts: dict[str, np.ndarray]
    ) -> str:
        """Write ``artifacts`` (file name -> array) then ``manifest``; return the manifest's URI."""
        ...

    def read_manifest(self, video_id: str) -> Manifest | None: ...

    def probe(self) -> None:
        """Raise OutputError unless results can be written here (see :func:`probe_output`)."""
        ...


def open_storage(uri: str, settings: PipelineSettings | None = None) -> Storage:
    """Storage for a plain directory path, ``file:///dir`` or ``s3://bucket[/prefix]``."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"invalid S3 output {uri!r}: use s3://bucket/prefix")
        return S3Storage(parts.netloc, parts.path.strip("/"), settings)
    if scheme == "file":
        return LocalStorage(Path(unquote(parts.path)))
    if scheme == "":
        return LocalStorage(Path(uri))
    raise ValueError(
        f"unsupported output {uri!r}: use a directory, file:///dir or s3://bucket/prefix"
    )


def probe_output(output_uri: str, settings: PipelineSettings | None = None) -> None:
    """Check that results can be written under ``output_uri``; call it before doing any work.

    Local directory: creates it (with its parents) if missing, as writing would, then
    creates and removes a hidden probe file in it. S3 prefix: puts and deletes an empty
    probe object under it (writing an item deletes its previous manifest, so deletes must be
    allowed too); botocore's retries (``S3_MAX_ATTEMPTS``) apply, so an unreachable endpoint
    takes a few seconds to report. Probe names are unique: concurrent probes do not collide.

    Args:
        output_uri: what :func:`open_storage` and ``process_items`` take: a directory path,
            ``file:///dir`` or ``s3://bucket[/prefix]``.
        settings: the S3 settings for an s3 output; default :func:`~audioproc.settings.pipeline_settings`.

    Raises:
        OutputError: the location is malformed or cannot take results; the message names
            the location and the reason (e.g. ``/out/x is a file, not a directory``,
            ``Permission denied``, ``S3 AccessDenied``).
    """
    try:
        storage = open_storage(output_uri, settings)
    except ValueError as exc:
        raise OutputError(str(exc)) from exc
    storage.probe()


def read_manifest(manifest_uri: str, settings: PipelineSettings | None = None) -> Manifest:
    """The manifest at ``file://…/manifest.json``, a plain path, or ``s3://bucket/key``."""
    return Manifest.model_validate_json(read_bytes(manifest_uri, settings))


def read_bytes(uri: str, settings: PipelineSettings | None = None) -> bytes:
    """The bytes of a stored object: a plain path, ``file://`` or ``s3://bucket/key``."""
    parts = urlsplit(uri)
    if parts.scheme.lower() == "s3":
        from audioproc.s3 import make_s3_client
        from audioproc.settings import pipeline_settings

        client = make_s3_client(settings or pipeline_settings())
        return client.get_object(Bucket=parts.netloc, Key=parts.path.lstrip("/"))["Body"].read()
    path = unquote(parts.path) if parts.scheme.lower() == "file" else uri
    return Path(path).read_bytes()


def open_stream(uri: str, offset: int = 0, settings: PipelineSettings | None = None) -> BinaryIO:
    """A buffered binary stream of a stored object from byte ``offset`` on: a plain path,
    ``file://`` (seeked) or ``s3://bucket/key`` (a ranged GET, read as it is consumed).

    Raises:
        StorageError: the object cannot be opened (missing, unreadable, storage down).
    """
    parts = urlsplit(uri)
    try:
        if parts.scheme.lower() == "s3":
            from audioproc.s3 import make_s3_client
            from audioproc.settings import pipeline_settings

            client = make_s3_client(settings or pipeline_settings())
            body = client.get_object(
                Bucket=parts.netloc, Key=parts.path.lstrip("/"), Range=f"bytes={offset}-"
            )["Body"]
            return io.BufferedReader(_ReadInto(body), buffer_size=64 * 1024)
        path = unquote(parts.path) if parts.scheme.lower() == "file" else uri
        stream = open(path, "rb")  # noqa: SIM115 - the caller closes it
        stream.seek(offset)
        return stream
    except Exception as exc:  # OSError, botocore's errors: the object cannot be read
        raise StorageError(f"cannot read {uri}: {type(exc).__name__}: {exc}") from exc


class _ReadInto(io.RawIOBase):
    """A raw stream over anything with ``read(n)`` (botocore's StreamingBody), so that
    ``io.BufferedReader`` can read lines from it in blocks."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data: bytes = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


def write_object(uri: str, data: bytes, settings: PipelineSettings | None = None) -> None:
    """Store ``data`` whole at ``uri`` (a plain path, ``file://`` or ``s3://bucket/key``):
    locally written to a temporary name and renamed, on S3 one put.

    Raises:
        StorageError: it cannot be written.
    """
    parts = urlsplit(uri)
    try:
        if parts.scheme.lower() == "s3":
            from audioproc.s3 import make_s3_client
            from audioproc.settings import pipeline_settings

            client = make_s3_client(settings or pipeline_settings())
            client.put_object(Bucket=parts.netloc, Key=parts.path.lstrip("/"), Body=data)
            return
        path = Path(unquote(parts.path) if parts.scheme.lower() == "file" else uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, data)
    except Exception as exc:  # OSError, botocore's errors
        raise StorageError(f"cannot write {uri}: {type(exc).__name__}: {exc}") from exc


def sibling_uri(manifest_uri: str, file_name: str) -> str:
    """The URI of ``file_name`` in the same directory (or S3 prefix) as ``manifest_uri``."""
    return manifest_uri.rsplit("/", 1)[0] + "/" + file_name


def _npy_bytes(array: np.ndarray) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().absolute()
        self.base_uri = self.root.as_uri()

    def item_dir(self, video_id: str) -> Path:
        check_video_id(video_id)
        return self.root / video_id

    def manifest_uri(self, video_id: str) -> str:
        check_video_id(video_id)
        return manifest_uri(self.base_uri, video_id)

    def write_item(
        self, video_id: str, manifest: Manifest, artifacts: dict[str, np.ndarray]
    ) -> str:
        directory = self.item_dir(video_id)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            (directory / MANIFEST_NAME).unlink(missing_ok=True)
            for name, array in artifacts.items():
                _atomic_write(directory / _check_file_name(name), _npy_bytes(array))
            _atomic_write(directory / MANIFEST_NAME, manifest.to_json().encode())
        except OSError as exc:
            raise StorageError(
                f"cannot write results of {video_id!r} under {directory}: {exc}"
            ) from exc
        return self.manifest_uri(video_id)

    def probe(self) -> None:
        for ancestor in (self.root, *self.root.parents):
            if ancestor.exists() or ancestor.is_symlink():
                if not ancestor.is_dir():
                    raise OutputError(
                        f"cannot write results under {self.root}: {ancestor} is not a directory"
                    )
                break
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.root, prefix=".audioproc-probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise OutputError(
                f"cannot write results under {self.root}: {exc.strerror or exc}{where}"
            ) from exc

    def read_manifest(self, video_id: str) -> Manifest | None:
        path = self.item_dir(video_id) / MANIFEST_NAME
        return Manifest.model_validate_json(path.read_bytes()) if path.exists() else None


def _check_file_name(name: str) -> str:
    if "/" in name or "\\" in name or name in ("", ".", "..", MANIFEST_NAME):
        raise ValueError(f"invalid artifact file name {name!r}")
    return name


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file in ``path``'s directory, fsync it, rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class S3Storage:
    def __init__(self, bucket: str, prefix: str, settings: PipelineSettings | None = None) -> None:
        from audioproc.settings import pipeline_settings

        self.bucket = bucket
        self.prefix = prefix
        self.settings = settings or pipeline_settings()
        self.base_uri = f"s3://{bucket}/{prefix}".rstrip("/")
        self._client: S3Client | None = None

    @property
    def client(self) -> S3Client:
        if self._client is None:
            from audioproc.s3 import make_s3_client

            self._client = make_s3_client(self.settings)
        return self._client

    def key(self, video_id: str, file_name: str) -> str:
        check_video_id(video_id)
        return "/".join(p for p in (self.prefix, video_id, file_name) if p)

    def manifest_uri(self, video_id: str) -> str:
        check_video_id(video_id)
        return manifest_uri(self.base_uri, video_id)

    def write_item(
        self, video_id: str, manifest: Manifest, artifacts: dict[str, np.ndarray]
    ) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(video_id, MANIFEST_NAME))
            for name, array in artifacts.items():
                self._put(
                    self.key(video_id, _check_file_name(name)),
                    _npy_bytes(array),
                    "application/octet-stream",
                )
            self._put(
                self.key(video_id, MANIFEST_NAME), manifest.to_json().encode(), "application/json"
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(
                f"cannot write results of {video_id!r} to {self.base_uri} (after retries): {exc}"
            ) from exc
        return self.manifest_uri(video_id)

    def probe(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        key = "/".join(p for p in (self.prefix, f".audioproc-probe-{uuid.uuid4().hex}") if p)
        try:
            self._put(key, b"", "application/octet-stream")
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise OutputError(
                f"cannot write results to {self.base_uri}: S3 {error.get('Code', '?')} "
                f"({error.get('Message') or exc}) on {exc.operation_name}"
            ) from exc
        except BotoCoreError as exc:
            raise OutputError(
                f"cannot write results to {self.base_uri} (after retries): {exc}"
            ) from exc

    def _put(self, key: str, data: bytes, content_type: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def read_manifest(self, video_id: str) -> Manifest | None:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(
                Bucket=self.bucket, Key=self.key(video_id, MANIFEST_NAME)
            )["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return Manifest.model_validate_json(body.read())
