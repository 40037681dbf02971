"""Model artifacts: a CTranslate2 model directory plus tokenizer.json, on S3 or on local disk."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from headrace.core.aws_calls import call_aws
from headrace.core.errors import HeadraceError, ModelLoadError

logger = logging.getLogger("headrace.artifacts")

REQUIRED_FILES = ("config.json", "model.bin", "tokenizer.json")
_MANIFEST = ".headrace-manifest.json"


def split_s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise ModelLoadError(f"bad S3 URI {uri!r}: expected s3://bucket/prefix")
    return bucket, (prefix.rstrip("/") + "/") if prefix else ""


def fetch_model(location: str, cache_dir: Path, s3: Any) -> Path:
    """A local directory holding the model; S3 artifacts are downloaded once and cached by ETag."""
    if location.startswith("s3://"):
        model_dir = _fetch_from_s3(location, cache_dir, s3)
    else:
        model_dir = Path(location).expanduser()
    missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
    if missing:
        raise ModelLoadError(f"model at {location} lacks {', '.join(missing)}")
    return model_dir


def _fetch_from_s3(uri: str, cache_dir: Path, s3: Any) -> Path:
    bucket, prefix = split_s3_uri(uri)
    try:
        objects = call_aws(_list_objects, s3=s3, bucket=bucket, prefix=prefix)
    except HeadraceError as e:
        raise ModelLoadError(f"cannot list {uri}: {e}") from e
    if not objects:
        raise ModelLoadError(f"no model at {uri}")
    target = cache_dir / bucket / prefix
    manifest = target / _MANIFEST
    if manifest.is_file() and json.loads(manifest.read_text()) == objects:
        logger.info("model cache hit", extra={"location": uri, "path": str(target)})
        return target
    logger.info("downloading model", extra={"location": uri, "files": len(objects)})
    target.parent.mkdir(parents=True, exist_ok=True)
    # Download beside the target and swap it in whole, so a crash never leaves half a model.
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    try:
        for relative in objects:
            destination = staging / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            call_aws(
                s3.download_file,
                Bucket=bucket,
                Key=prefix + relative,
                Filename=str(destination),
            )
        (staging / _MANIFEST).write_text(json.dumps(objects, sort_keys=True))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except (HeadraceError, OSError) as e:
        raise ModelLoadError(f"cannot download {uri}: {e}") from e
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _list_objects(s3: Any, bucket: str, prefix: str) -> dict[str, str]:
    """Every object under the prefix (relative key -> ETag), all pages."""
    return {
        obj["Key"][len(prefix) :]: obj["ETag"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for obj in page.get("Contents", [])
        if not obj["Key"].endswith("/")
    }


def upload_model(model_dir: Path, uri: str, s3: Any) -> None:
    """Upload a local model directory to s3://bucket/prefix (used by `headrace dev` and docs)."""
    bucket, prefix = split_s3_uri(uri)
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        key = prefix + path.relative_to(model_dir).as_posix()
        call_aws(s3.upload_file, Filename=str(path), Bucket=bucket, Key=key)
