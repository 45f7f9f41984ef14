"""Bulk classification: one JSON record per image, shared by the CLI and the batch Lambda.

`to_record` is the one shape of a classified (or refused) image; the local pool and the cloud
batch handler both write it, so a results file reads the same wherever it was made.

Locally, `list_items` turns folders, files and `s3://bucket/prefix/` URIs into items and
`classify_many` classifies them, in this process or on a pool of worker processes with one
single-threaded interpreter each: the Python around each invoke (decode glue, scoring, the
record) then runs in parallel too, while this process only collects records. `read_done` makes
a JSON-lines results file resumable.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from wastesort.errors import WastesortError

if TYPE_CHECKING:
    from concurrent.futures import Future
    from multiprocessing.context import BaseContext

    from wastesort.classifier import Classifier
    from wastesort.registry.s3 import S3Store

log = logging.getLogger(__name__)

S3_SCHEME = "s3://"
CHUNK = 16
"""Images per task sent to a worker: amortises the pickling round trip over ~6 ms images."""
IN_FLIGHT_PER_WORKER = 4
"""Tasks queued per worker: enough that none waits for work, few enough to stay bounded."""


def to_record(path: str, outcome: Any) -> dict[str, Any]:
    """`{"path", <prediction fields>}` or `{"path", "error": {"code", "message"}}`.

    `outcome` is a `Prediction` or the `WastesortError` (or `OSError`) that refused the image.
    """
    if isinstance(outcome, WastesortError):
        return {"path": path, "error": {"code": outcome.code, "message": outcome.message}}
    if isinstance(outcome, OSError):
        message = outcome.strerror or str(outcome)
        return {"path": path, "error": {"code": "unreadable", "message": message}}
    return {"path": path, **outcome.to_dict()}


def usage_error(message: str) -> WastesortError:
    """What the CLI turns into one line and exit 2."""
    return WastesortError(message, code="usage")


# --- items -------------------------------------------------------------------------------------


def parse_s3(uri: str) -> tuple[str, str]:
    """`s3://bucket/key-or-prefix` -> (bucket, key-or-prefix), parsed as text (a `Path` would
    turn `s3://b/p` into `s3:/b/p`).

    Raises:
        WastesortError: (code `usage`) the URI names no bucket.
    """
    bucket, _, key = uri.removeprefix(S3_SCHEME).partition("/")
    if not uri.startswith(S3_SCHEME) or not bucket:
        raise usage_error(f"{uri!r} names no bucket (expected s3://bucket/prefix/)")
    return bucket, key


def _is_image(name: str) -> bool:
    from wastesort.preprocess import IMAGE_SUFFIXES  # noqa: PLC0415

    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def _walk(path: Path) -> Iterator[str]:
    """A file as given; a folder walked recursively, sorted, image files only."""
    if path.is_dir():
        yield from sorted(str(p) for p in path.rglob("*") if p.is_file() and _is_image(p.name))
    elif path.exists():
        yield str(path)
    else:
        hint = " (an S3 URI starts with s3://)" if str(path).startswith("s3:") else ""
        raise usage_error(f"{path}: no such file or folder{hint}")


def _list_s3(uri: str, reader: ItemReader) -> Iterator[str]:
    """An object key ending in an image suffix as given; else every image under the prefix."""
    bucket, key = parse_s3(uri)
    if key and not key.endswith("/") and _is_image(key):
        yield uri
        return
    prefix = f"{key.rstrip('/')}/" if key.strip("/") else ""
    for name in reader.store(bucket).list(prefix):
        if _is_image(name):
            yield f"{S3_SCHEME}{bucket}/{name}"


def list_items(sources: Sequence[str]) -> list[str]:
    """Items to classify: files as given, folders walked recursively (sorted, image files
    only), `s3://bucket/prefix/` listed (in S3's sorted order); each item once.

    Raises:
        WastesortError: (code `usage`) a local path that does not exist, an S3 URI with no
            bucket; RegistryError when a bucket cannot be listed.
    """
    reader = ItemReader()
    items: dict[str, None] = {}
    for source in sources:
        found = _list_s3(source, reader) if source.startswith(S3_SCHEME) else _walk(Path(source))
        items.update(dict.fromkeys(found))
    return list(items)


class ItemReader:
    """Reads items: local files, and S3 objects through one `S3Store` (one boto3 client,
    made on first use) per bucket."""

    def __init__(self, *, client: Any = None) -> None:
        self._client = client
        self._stores: dict[str, S3Store] = {}

    def store(self, bucket: str) -> S3Store:
        if bucket not in self._stores:
            from wastesort.registry.s3 import S3Store  # noqa: PLC0415 (boto3 only for S3)

            self._stores[bucket] = S3Store(f"{S3_SCHEME}{bucket}", client=self._client)
        return self._stores[bucket]

    def read(self, item: str) -> bytes:
        """An item's bytes.

        Raises:
            OSError: the file cannot be read; NotFoundError / RegistryError: the object.
        """
        if item.startswith(S3_SCHEME):
            bucket, key = parse_s3(item)
            return self.store(bucket).get(key)
        return Path(item).read_bytes()


def classify_item(
    classifier: Classifier, reader: ItemReader, item: str, top_k: int | None = None
) -> dict[str, Any]:
    """One item's record; whatever goes wrong with this image becomes its error record."""
    try:
        return to_record(item, classifier.predict(reader.read(item), top_k=top_k))
    except (WastesortError, OSError) as exc:
        return to_record(item, exc)
    except Exception as exc:  # one image never stops a run of a million
        log.exception("unexpected error classifying %s", item)
        return to_record(item, WastesortError(f"{type(exc).__name__}: {exc}", code="internal"))


# --- classifying many --------------------------------------------------------------------------


def classify_many(
    model: str | Classifier | None,
    items: Sequence[str],
    *,
    workers: int = 1,
    threads: int | None = None,
    top_k: int | None = None,
) -> Iterator[dict[str, Any]]:
    """One `to_record` dict per item (in the items' order; `"path"` is the item string).

    Args:
        model: anything `Classifier.load` accepts; None is the bundled `production`; or a
            loaded `Classifier`, used as it is (in this process: it cannot go with workers).
        items: local file paths and `s3://bucket/key` URIs (`list_items` makes them).
        workers: 1 classifies in this process; more start that many worker processes, each
            loading the model once, pinned to the version resolved here, so an alias that
            moves during the run does not mix versions. (A script that asks for workers needs
            the `if __name__ == "__main__":` guard: workers import the main module.)
        threads: interpreter threads (default: the runtime's default in-process, 1 per worker).
        top_k: keep only the K best classes in `all_confidences`.

    Raises:
        ModelError: the model cannot be loaded (before any item is classified).
        WastesortError: a worker process died (the records yielded so far stand).
    """
    from wastesort.classifier import Classifier  # noqa: PLC0415

    loaded = isinstance(model, Classifier)
    if loaded and workers > 1:
        raise ValueError("workers load the model themselves: give its URI, not a Classifier")
    # With workers, the fork server's imports start now, beside this process's own.
    context = _pool_context() if workers > 1 and len(items) > 0 else None
    if context is None:
        classifier = model if loaded else Classifier.load(model, num_threads=threads)
        reader = ItemReader()
        for item in items:
            yield classify_item(classifier, reader, item, top_k)
        return
    classifier = Classifier.load(model, num_threads=1)  # a bad model fails here, once
    pinned = _pin(model, classifier.version)
    yield from _pooled(
        context, classifier, pinned, items, workers=workers, threads=threads or 1, top_k=top_k
    )


def _pin(model: str | None, version: str) -> str:
    """The model URI with its alias replaced by the version it resolved to."""
    from wastesort.classifier import default_model_uri, split_ref  # noqa: PLC0415

    base, _ = split_ref(str(model or default_model_uri()))
    return base if base.endswith(".tflite") else f"{base}@{version}"


def _pool_context() -> BaseContext:
    """Workers never fork this process, which runs threads (the progress bar, interpreters):
    they fork from a server that imports the core once, started here so that its imports
    overlap the caller's own work (spawn where there is no fork server)."""
    import multiprocessing  # noqa: PLC0415  (~15 ms: only runs with workers pay for it)

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    from multiprocessing import forkserver  # noqa: PLC0415

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["wastesort.classifier", "wastesort.bulk"])
    forkserver.ensure_running()
    return context


def _pooled(
    context: BaseContext,
    classifier: Classifier,
    model: str,
    items: Sequence[str],
    *,
    workers: int,
    threads: int,
    top_k: int | None,
) -> Iterator[dict[str, Any]]:
    from concurrent.futures import ProcessPoolExecutor  # noqa: PLC0415
    from concurrent.futures.process import BrokenProcessPool  # noqa: PLC0415

    chunk = max(1, min(CHUNK, len(items) // (workers * IN_FLIGHT_PER_WORKER)))
    chunks = (items[i : i + chunk] for i in range(0, len(items), chunk))
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_start_worker,
        initargs=(model, threads),
    )
    window = workers * IN_FLIGHT_PER_WORKER
    # Records leave in the items' order: a chunk is a Future, or a list this process made.
    pending: deque[Future[list[dict[str, Any]]] | list[dict[str, Any]]] = deque()
    warming = True
    reader = ItemReader()
    try:
        while True:
            while len(pending) < window and (part := next(chunks, None)) is not None:
                pending.append(pool.submit(_classify_chunk, list(part), top_k))
            if not pending:
                break
            head = pending[0]
            if isinstance(head, list) or head.done():
                warming = warming and isinstance(head, list)
            elif (
                warming and len(pending) < 2 * window and (part := next(chunks, None)) is not None
            ):  # until the first worker answers (~0.3 s), classify here rather than wait
                pending.append([classify_item(classifier, reader, i, top_k) for i in part])
                continue
            done = pending.popleft()
            yield from done if isinstance(done, list) else done.result()
    except BrokenProcessPool as exc:
        raise WastesortError(f"a worker process died ({exc}); re-run to resume") from None
    finally:
        pool.shutdown(wait=not pending, cancel_futures=True)


_WORKER: dict[str, Any] = {}
"""This worker process's classifier (set by `_start_worker`)."""


def _start_worker(model: str, threads: int) -> None:
    from wastesort.classifier import Classifier  # noqa: PLC0415

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _WORKER["classifier"] = Classifier.load(model, num_threads=threads)
    _WORKER["reader"] = ItemReader()
    _exit_with_parent()


def _exit_with_parent() -> None:
    """Stop when the process that started the pool is gone: a SIGKILL leaves the pool's pipes
    open (the other workers and the fork server hold them), so an orphaned worker would wait
    for work forever. The parent's sentinel pipe closes only when the parent dies."""
    import multiprocessing  # noqa: PLC0415

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _classify_chunk(items: list[str], top_k: int | None) -> list[dict[str, Any]]:
    classifier, reader = _WORKER["classifier"], _WORKER["reader"]
    return [classify_item(classifier, reader, item, top_k) for item in items]


# --- resumable results ------------------------------------------------------------------------


class Done(NamedTuple):
    """What a results file already holds (`read_done`)."""

    errors: dict[str, bool]
    """Each recorded path, with whether its record (the last one for the path) is an error."""
    version: str | None
    """The model version of its predictions; None when it holds none."""


def read_done(out: Path) -> Done:
    """The paths already recorded in the JSON-lines file `out` and the model version that
    classified them.

    A path recorded twice (an error redone by `--retry-failed`) counts by its later line. A
    last line without its newline was torn by a kill mid-write: it is cut off the file (its
    image is redone), so records appended next start on a line of their own.

    Raises:
        WastesortError: (code `usage`) a complete line that is not a record, or predictions
            of more than one model version.
    """
    done: dict[str, bool] = {}
    versions: set[str] = set()
    if not out.is_file():  # not there yet (or a device such as /dev/null: nothing to resume)
        return Done(done, None)
    with out.open("rb+") as file:
        good = 0
        for number, line in enumerate(file, start=1):
            if not line.endswith(b"\n"):
                log.warning("%s: dropping a torn last line (%d bytes)", out, len(line))
                file.truncate(good)
                break
            try:
                record = json.loads(line)
                done[record["path"]] = "error" in record
                if "model_version" in record:
                    versions.add(str(record["model_version"]))
            except (ValueError, TypeError, KeyError):
                raise usage_error(f"{out} line {number} is not a record; fix or move it") from None
            good += len(line)
    if len(versions) > 1:
        raise usage_error(f"{out} mixes models {', '.join(sorted(versions))}; split or move it")
    return Done(done, versions.pop() if versions else None)


def resolve_version(model: str | None) -> str:
    """The version `model` names now, which `classify_many` pins a run to (an alias read
    from the manifest; a bare `.tflite` named by its content).

    Raises:
        ModelError: unknown version or alias, or a file that is not a model.
    """
    from wastesort import artifacts  # noqa: PLC0415
    from wastesort.classifier import default_model_uri, split_ref  # noqa: PLC0415

    base, ref = split_ref(str(model or default_model_uri()))
    if base.endswith(".tflite"):
        path = Path(base)
        return artifacts.entry_for_file(path, artifacts.read_model_file(path), None).version
    from wastesort.registry import Registry  # noqa: PLC0415

    return Registry.from_uri(base).resolve(ref).version
