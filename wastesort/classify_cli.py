"""`wastesort classify`: classify image files, folders and S3 prefixes (`wastesort.bulk`).

    wastesort classify PATH... [--model URI] [--json] [--top-k K] [--threads T]
                               [--workers N] [--out FILE [--retry-failed]]

PATH is a file, a folder (walked recursively, image files only) or `s3://bucket/prefix/`.
Records print to stdout (a table, or one JSON object per image with `--json`); with `--out`
they are appended to FILE as JSON lines instead, and a re-run with the same FILE skips the
paths already there, so a killed run resumes where it stopped. FILE holds one model version:
a re-run whose model resolves to another version is refused (use another FILE).
`--retry-failed` also redoes the paths whose record is an error; the new line supersedes the
old (the later line for a path wins). Exit 0 when every image was classified, 1 when some
failed (each has an error record), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from wastesort.bulk import Done, classify_many, list_items, read_done, resolve_version, usage_error
from wastesort.errors import WastesortError

EXIT_OK, EXIT_SOME_FAILED = 0, 1
PROGRESS_AFTER = 8  # images; fewer finish before a bar would be worth drawing
IMAGES_PER_WORKER = 150
"""Images each worker needs to pay for the pool's start-up (~0.3 s more than in-process): two
workers break even at about 300 images on 2 cores (BENCHMARKS.md, "Bulk, local")."""


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add `classify` to the CLI's commands."""
    parser = commands.add_parser("classify", help="classify image files, folders or S3 prefixes")
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="image file, folder, or s3://bucket/prefix/"
    )
    parser.add_argument(
        "--model",
        help="registry URI with optional @version/@alias, or a .tflite file "
        "(default: WASTESORT_MODEL or the bundled registry's production alias)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per image")
    parser.add_argument("--top-k", type=positive, metavar="K", help="keep the K best classes")
    parser.add_argument(
        "--threads",
        type=positive,
        metavar="T",
        help="interpreter threads per process (default: 1 in a worker; in-process, the "
        "runtime's default)",
    )
    parser.add_argument(
        "--workers",
        type=positive,
        metavar="N",
        help="worker processes (default: the core count, fewer for small runs; "
        "1 classifies in this process)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="append JSON lines here; a re-run with the same model version skips what is "
        "already there",
    )
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="with --out: redo the images whose record is an error (the new line wins)",
    )


def positive(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def default_workers(images: int) -> int:
    """The core count, but no more workers than the run has images to pay for."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, images // IMAGES_PER_WORKER))


def run(args: argparse.Namespace) -> int:
    """The CLI's entry: list, skip what `--out` holds, classify, report failures."""
    if args.retry_failed and not args.out:
        raise usage_error("--retry-failed needs --out (the file whose failed images to redo)")
    items = list_items(args.paths)
    if args.out:
        _check_writable(args.out)
    done = read_done(args.out) if args.out else Done({}, None)
    if done.version is not None:
        _check_same_version(args.out, done.version, resolve_version(args.model))
    redo = args.retry_failed
    todo = [item for item in items if item not in done.errors or (redo and done.errors[item])]
    # Failures already in the file, of this run's items only (a retry redoes them all).
    failed = 0 if redo else sum(done.errors.get(item, False) for item in items)
    workers = args.workers or default_workers(len(todo))
    if not args.json and not args.out:
        print(f"{'path':<48} {'class':<12} {'confidence':>10}  decision")
    records = classify_many(
        args.model, todo, workers=workers, threads=args.threads, top_k=args.top_k
    )
    with _sink(args) as emit, _progress(len(todo)) as advance:
        for record in records:
            failed += "error" in record
            emit(record)
            advance()
    if args.out:
        print(
            f"wastesort: {len(todo)} images classified into {args.out} "
            f"({len(items) - len(todo)} were already there)",
            file=sys.stderr,
        )
    if failed:
        print(f"wastesort: {failed} of {len(items)} images failed", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _check_same_version(out: Path, recorded: str, pinned: str) -> None:
    """Refuse to mix versions in one results file: its skipped paths would keep the other
    version's records (a new `--model`, or an alias that has moved since)."""
    if recorded != pinned:
        raise usage_error(
            f"{out} holds records of model {recorded} but this run's model is {pinned}; "
            "use another --out"
        )


def _check_writable(out: Path) -> None:
    """Refuse an `--out` that cannot be appended to before any image is classified."""
    try:
        with out.open("a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise usage_error(f"cannot write {out}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _sink(args: argparse.Namespace) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Where records go: appended to `--out` one whole line at a time (a kill tears at most
    the last line, which `read_done` drops), else printed."""
    if not args.out:
        yield lambda record: _print(record, as_json=args.json)
        return
    with args.out.open("ab", buffering=0) as file:  # unbuffered: nothing left to fail at close

        def append(record: dict[str, Any]) -> None:
            line = memoryview((json.dumps(record) + "\n").encode())
            try:
                while line:
                    line = line[file.write(line) :]
            except OSError as exc:  # a full disk: stop; a re-run resumes from the last line
                raise WastesortError(f"cannot write {args.out}: {exc.strerror or exc}") from None

        yield append


def _print(record: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(record), flush=True)
    elif "error" in record:
        error = record["error"]
        print(f"wastesort: {record['path']}: {error['message']} ({error['code']})", file=sys.stderr)
    else:
        print(
            f"{record['path']:<48} {record['predicted_class']:<12} "
            f"{record['confidence']:>10.3f}  {record['decision']}",
            flush=True,
        )


class _progress:  # noqa: N801  (used like a function)
    """A rich progress bar on stderr (count, rate, ETA) for long runs on a terminal; a no-op
    otherwise, so logs and pipes stay clean."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar: Any = None

    def __enter__(self) -> Callable[[], None]:
        if self.total <= PROGRESS_AFTER or not sys.stderr.isatty():
            return lambda: None
        try:  # rich costs ~50 ms to import: only when a bar is shown, and only if installed
            from rich.console import Console  # noqa: PLC0415
            from rich.progress import (  # noqa: PLC0415
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )
        except ImportError:
            return lambda: None

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
            redirect_stdout=False,
        )
        self.bar.start()
        task = self.bar.add_task("classifying", total=self.total, rate="")

        def advance() -> None:
            speed = self.bar.tasks[0].speed  # images/s over rich's recent window
            self.bar.update(task, advance=1, rate=f"{speed:.0f} img/s" if speed else "")

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
