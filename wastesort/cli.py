"""`python -m wastesort` (also the `wastesort` command).

    wastesort classify PATH... [--model URI] [--json] [--top-k K]
    wastesort registry list|show|promote|rollback|history|keygen [--registry URI]
    wastesort dataset export --captures URI --out DIR [--since DATE] [--reviewers-only]
    wastesort drift --current FOLDER [--model URI] [--reference FOLDER] [--json] [--plot PNG]

Exit codes: 0 everything succeeded, 1 some images failed, 2 a usage error or a model that
cannot be loaded. User errors print one line, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wastesort import drift_cli, export
from wastesort.bulk import to_record
from wastesort.errors import WastesortError
from wastesort.preprocess import IMAGE_SUFFIXES

if TYPE_CHECKING:
    from wastesort.manifest import Manifest

PROGRESS_AFTER = 8  # images; fewer finish before a bar would be worth drawing

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wastesort", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    classify = commands.add_parser("classify", help="classify image files or folders")
    classify.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    classify.add_argument(
        "--model",
        help="registry URI with optional @version/@alias, or a .tflite file "
        "(default: WASTESORT_MODEL or the bundled registry's production alias)",
    )
    classify.add_argument("--json", action="store_true", help="one JSON object per image")
    classify.add_argument("--top-k", type=_positive, help="keep the K best classes")
    classify.add_argument("--threads", type=_positive, help="interpreter threads")

    registry = commands.add_parser("registry", help="inspect and move model versions")
    registry.add_argument(
        "--registry",
        default=os.environ.get("WASTESORT_REGISTRY"),
        help="local folder or s3://bucket/prefix (default: WASTESORT_REGISTRY or models/)",
    )
    registry.add_argument("--json", action="store_true", help="print JSON")
    actions = registry.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="published versions and the aliases on them")
    show = actions.add_parser(
        "show", help="one manifest entry (stdout) and the schema the registry needs (stderr)"
    )
    show.add_argument("ref", nargs="?", default=None, help="version or alias (production)")
    show.add_argument(
        "--schema",
        action="store_true",
        help="print only which manifest schema the registry needs and what forces it",
    )
    promote = actions.add_parser("promote", help="point an alias at a version")
    promote.add_argument("alias")
    promote.add_argument("version")
    promote.add_argument("--reason")
    rollback = actions.add_parser("rollback", help="point an alias back at its previous version")
    rollback.add_argument("alias")
    rollback.add_argument("--reason")
    history = actions.add_parser("history", help="who moved which alias when")
    history.add_argument("alias", nargs="?")
    keygen = actions.add_parser("keygen", help="write a new ed25519 signing key pair")
    keygen.add_argument("out", type=Path, help="folder for signing.pem and signing.pub")
    export.add_parser(commands)
    drift_cli.add_parser(commands)
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        commands = {"classify": _classify, "dataset": export.run, "drift": drift_cli.run}
        return commands.get(args.command, _registry)(args)
    except WastesortError as exc:
        print(f"wastesort: error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `wastesort classify ... | head`
        sys.stderr.close()
        return EXIT_OK


# --- classify ----------------------------------------------------------------------------------


def _walk(paths: Sequence[Path]) -> Iterator[Path]:
    """Files as given; folders walked recursively, sorted, image files only."""
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            yield path


def _classify(args: argparse.Namespace) -> int:
    from wastesort.classifier import Classifier  # noqa: PLC0415

    classifier = Classifier.load(args.model, num_threads=args.threads)
    files = list(_walk(args.paths))
    failed = 0
    if not args.json:
        print(f"{'path':<48} {'class':<12} {'confidence':>10}  decision")
    with _progress(len(files)) as advance:
        for path in files:
            result = _classify_one(classifier, path, args.top_k)
            failed += "error" in result
            _emit(result, as_json=args.json)
            advance()
    if failed:
        print(f"wastesort: {failed} of {len(files)} images failed", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _classify_one(classifier: Any, path: Path, top_k: int | None) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return to_record(str(path), exc)
    try:
        return to_record(str(path), classifier.predict(data, top_k=top_k))
    except WastesortError as exc:
        return to_record(str(path), exc)


def _emit(result: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result), flush=True)
    elif "error" in result:
        error = result["error"]
        print(f"wastesort: {result['path']}: {error['message']} ({error['code']})", file=sys.stderr)
    else:
        print(
            f"{result['path']:<48} {result['predicted_class']:<12} "
            f"{result['confidence']:>10.3f}  {result['decision']}",
            flush=True,
        )


class _progress:  # noqa: N801  (used like a function)
    """A rich progress bar on stderr for long runs on a terminal; a no-op otherwise."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar: Any = None

    def __enter__(self) -> Any:
        if self.total <= PROGRESS_AFTER or not sys.stderr.isatty():
            return lambda: None
        try:  # rich costs ~50 ms to import: only when a bar is shown, and only if installed
            from rich.console import Console  # noqa: PLC0415
            from rich.progress import Progress  # noqa: PLC0415
        except ImportError:
            return lambda: None

        self.bar = Progress(console=Console(stderr=True), transient=True, redirect_stdout=False)
        self.bar.start()
        task = self.bar.add_task("classifying", total=self.total)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


# --- registry ----------------------------------------------------------------------------------


def _registry(args: argparse.Namespace) -> int:
    from wastesort.classifier import BUNDLED_REGISTRY  # noqa: PLC0415
    from wastesort.registry import Registry  # noqa: PLC0415

    if args.action == "keygen":
        return _keygen(args.out)
    registry = Registry.from_uri(args.registry or BUNDLED_REGISTRY)
    if args.action == "list":
        manifest = registry.manifest()
        rows = [
            {
                "version": v.version,
                "created_at": v.created_at.isoformat(),
                "aliases": [a for a, s in manifest.aliases.items() if s.version == v.version],
                "accuracy": _headline(v.metrics, "accuracy"),
                "macro_f1": _headline(v.metrics, "macro_f1"),
                "sha256": v.sha256,
            }
            for v in manifest.versions.values()
        ]
        return _print_rows(rows, args.json)
    if args.action == "show":
        return _show(registry.manifest(), args)
    if args.action == "promote":
        registry.promote(args.alias, args.version, reason=args.reason)
        print(f"{args.alias} -> {args.version}")
        return EXIT_OK
    if args.action == "rollback":
        version = registry.rollback(args.alias, reason=args.reason)
        print(f"{args.alias} -> {version} (rolled back)")
        return EXIT_OK
    rows = [
        {"alias": alias, **event.model_dump(mode="json")}
        for alias, event in registry.history(args.alias)
    ]
    return _print_rows(rows, args.json)


def _show(manifest: Manifest, args: argparse.Namespace) -> int:
    report = _schema_report(manifest)
    if args.schema:
        print(json.dumps(report, indent=2) if args.json else report["summary"])
        return EXIT_OK
    print(manifest.resolve(args.ref).model_dump_json(indent=2))
    print(report["summary"], file=sys.stderr)
    return EXIT_OK


def _schema_report(manifest: Manifest) -> dict[str, Any]:
    """Which schema the manifest needs (1 unless something of schema 2 is used) and what
    forces it: readers that know only schema 1 (older devices) refuse a schema-2 manifest."""
    needs = manifest.schema_needs()
    schema = manifest.required_schema()
    if needs:
        forced = "; ".join(f"{what} ({', '.join(fields)})" for what, fields in needs.items())
        summary = (
            f"manifest schema {schema}, needed by: {forced}. Only wastesort releases that read "
            f"schema {schema} can use this registry: upgrade readers (the fleet) first."
        )
    else:
        summary = "manifest schema 1: every wastesort release reads this registry"
    return {
        "schema_version": schema,
        "written_as": manifest.schema_version,
        "needed_by": needs,
        "summary": summary,
    }


def _headline(metrics: dict[str, Any], key: str) -> Any:
    """A served model's figure: top level, else under `int8` (entries published before the
    top-level copy existed)."""
    if key in metrics:
        return metrics[key]
    nested = metrics.get("int8")
    return nested.get(key) if isinstance(nested, dict) else None


def _print_rows(rows: list[dict[str, Any]], as_json: bool) -> int:
    if as_json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        print("(nothing)")
        return EXIT_OK
    columns = list(rows[0])
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    return EXIT_OK


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, str) and len(value) == 64:  # a sha256
        return value[:12]
    return "-" if value is None else str(value)


def _keygen(out: Path) -> int:
    from wastesort.signing import generate_keypair  # noqa: PLC0415

    private_pem, public_pem = generate_keypair()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"wastesort: error: cannot make the folder {out}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    private_path = out / "signing.pem"
    if private_path.exists():
        print(f"wastesort: error: {private_path} exists; not overwriting a key", file=sys.stderr)
        return EXIT_USAGE
    private_path.touch(mode=0o600)
    private_path.write_bytes(private_pem)
    (out / "signing.pub").write_bytes(public_pem)
    print(f"wrote {private_path} (keep it secret) and {out / 'signing.pub'} (give it to devices)")
    return EXIT_OK
