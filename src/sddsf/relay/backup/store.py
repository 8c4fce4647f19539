"""Where relay backups are kept: a local directory or an S3-compatible bucket.

A location is a flat namespace of objects named ``backup-NNNNNN/NAME``. Both
stores write each object whole and atomically (a directory: temporary file,
``fsync``, rename; S3: one ``PutObject``), and both can write an object only
if it does not exist yet (``exclusive``: a hard link; S3 ``If-None-Match: *``),
which is how two backups started at once cannot both take the same number.

S3 goes through ``boto3`` (the ``s3`` extra). Credentials, region and endpoint
come from the usual AWS configuration (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL``, ``~/.aws/config`` profiles, instance roles), or the
endpoint is given explicitly. Third-party errors are translated here, once,
into the SDDSF error tree.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Final

from sddsf.errors import ConfigError, ConflictError, NotFoundError, UnavailableError

__all__ = ["BackupStore", "DirectoryStore", "S3Store", "open_store"]

_NAME: Final = re.compile(r"[a-z0-9-]+(/[a-z0-9-]+)*")


def _check_key(key: str) -> str:
    # Keys are made by this package only; the check keeps a bug from writing
    # outside the location (no "..", no absolute path).
    if not _NAME.fullmatch(key):
        raise ValueError(f"bad backup object name {key!r}")
    return key


class BackupStore(ABC):
    """A backup location (see the module docstring)."""

    #: The location as the operator wrote it, for messages (no credentials).
    location: str

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The object's bytes.

        Raises:
            NotFoundError: no such object.
            UnavailableError: the location cannot be read.
        """

    @abstractmethod
    def put(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        """Write an object whole (replacing it, unless ``exclusive``).

        Raises:
            ConflictError: ``exclusive`` and the object exists.
            UnavailableError, ConfigError: the location cannot be written.
        """

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether the object exists."""

    @abstractmethod
    def folders(self) -> list[str]:
        """The names of the top-level folders (``backup-NNNNNN``), in any order."""

    def claim(self, folder: str) -> None:
        """Take a folder name for one backup run.

        Raises:
            ConflictError: another run took it first.
        """
        self.put(f"{folder}/claim", secrets.token_hex(16).encode(), exclusive=True)


class DirectoryStore(BackupStore):
    """Objects are files under ``root`` (created on first write)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.location = str(root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def get(self, key: str) -> bytes:
        """See :meth:`BackupStore.get`."""
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"{key} is missing from {self.location}") from None
        except OSError as exc:
            raise UnavailableError(f"cannot read {key} in {self.location}: {exc}") from exc

    def put(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        """See :meth:`BackupStore.put`."""
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if exclusive:
                try:
                    os.link(tmp, path)  # fails if the name exists: atomic "create new"
                except FileExistsError:
                    raise ConflictError(f"{key} already exists in {self.location}: another "
                                        "backup is writing there") from None
                finally:
                    tmp.unlink()
            else:
                os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise UnavailableError(f"cannot write {key} in {self.location}: {exc}") from exc

    def exists(self, key: str) -> bool:
        """See :meth:`BackupStore.exists`."""
        return self._path(key).is_file()

    def folders(self) -> list[str]:
        """See :meth:`BackupStore.folders`."""
        try:
            return [p.name for p in self.root.iterdir() if p.is_dir()]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise UnavailableError(f"cannot list {self.location}: {exc}") from exc


def _fsync_dir(path: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class S3Store(BackupStore):
    """Objects under ``s3://bucket/prefix`` through boto3.

    Args:
        url: ``s3://BUCKET`` or ``s3://BUCKET/PREFIX``.
        endpoint_url: an S3-compatible endpoint (default: the AWS configuration).
    """

    def __init__(self, url: str, *, endpoint_url: str | None = None) -> None:
        rest = url[len("s3://"):]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ConfigError(f"{url!r} has no bucket: use s3://BUCKET/PREFIX")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.location = url
        try:
            import boto3  # noqa: PLC0415 - the optional s3 extra
            from botocore.config import Config  # noqa: PLC0415
        except ImportError as exc:
            raise ConfigError("S3 backup locations need boto3: pip install 'sddsf[s3]'"
                              ) from exc
        config = Config(retries={"max_attempts": 5, "mode": "standard"})
        try:
            self._client: Any = boto3.session.Session().client(
                "s3", endpoint_url=endpoint_url or None, config=config)
        except Exception as exc:  # bad credentials, region or endpoint settings
            raise self._fail(exc, "the S3 client") from exc

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, exc: Exception, what: str) -> Exception:
        """Translate a boto3/botocore error into the SDDSF tree."""
        from botocore import exceptions as bx  # noqa: PLC0415

        where = f"{what} in {self.location}"
        if isinstance(exc, bx.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                return NotFoundError(f"{what} is missing from {self.location}")
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return ConflictError(f"{where} already exists: another backup is writing there")
            if code == "NoSuchBucket":
                return ConfigError(f"the bucket {self.bucket!r} does not exist")
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
                return ConfigError(f"S3 refused access to {where} ({code}): check the "
                                   "credentials and the bucket policy")
            return UnavailableError(f"S3 error on {where}: {code} {err.get('Message', '')}")
        if isinstance(exc, bx.ParamValidationError):  # e.g. no If-None-Match before 1.35
            return ConfigError(f"boto3 refused the request for {where} ({exc}): relay "
                               "backups need boto3 >= 1.35.36 (pip install 'sddsf[s3]')")
        if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
            return ConfigError("no S3 credentials: set AWS_ACCESS_KEY_ID and "
                               "AWS_SECRET_ACCESS_KEY, or an AWS profile")
        if isinstance(exc, bx.BotoCoreError) and not isinstance(exc, bx.ConnectionError
                                                                 | bx.HTTPClientError):
            return ConfigError(f"S3 configuration error for {where}: {exc}")
        return UnavailableError(f"cannot reach S3 for {where}: {exc}")

    def get(self, key: str) -> bytes:
        """See :meth:`BackupStore.get`."""
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            with contextlib.closing(body):
                return bytes(body.read())
        except Exception as exc:  # translated once, here
            raise self._fail(exc, key) from exc

    def put(self, key: str, data: bytes, *, exclusive: bool = False) -> None:
        """See :meth:`BackupStore.put`."""
        extra = {"IfNoneMatch": "*"} if exclusive else {}
        try:
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)
        except Exception as exc:
            raise self._fail(exc, key) from exc

    def exists(self, key: str) -> bool:
        """See :meth:`BackupStore.exists`."""
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            err = self._fail(exc, key)
            if isinstance(err, NotFoundError):
                return False
            raise err from exc
        return True

    def folders(self) -> list[str]:
        """See :meth:`BackupStore.folders`."""
        base = f"{self.prefix}/" if self.prefix else ""
        out: list[str] = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base, Delimiter="/")
            for page in pages:
                for common in page.get("CommonPrefixes", []):
                    out.append(str(common["Prefix"])[len(base):].rstrip("/"))
        except Exception as exc:
            raise self._fail(exc, "the backup list") from exc
        return out


def open_store(location: str, *, s3_endpoint: str | None = None) -> BackupStore:
    """The store of a location: ``s3://BUCKET/PREFIX`` or a directory path.

    Raises:
        ConfigError: an S3 URL without a bucket, or boto3 missing.
    """
    if location.startswith("s3://"):
        return S3Store(location, endpoint_url=s3_endpoint)
    if "://" in location:
        raise ConfigError(f"unsupported backup location {location!r}: use a directory or "
                          "s3://BUCKET/PREFIX")
    return DirectoryStore(location)
