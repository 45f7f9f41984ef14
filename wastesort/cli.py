"""`python -m wastesort` (also the `wastesort` command).

    wastesort classify PATH|s3://... [--model URI] [--json] [--top-k K] [--workers N] [--out FILE]
    wastesort registry list|show|promote|rollback|history|keygen|rollout-check [--registry URI]
    wastesort dataset export --captures URI --out DIR [--since DATE] [--reviewers-only]
    wastesort drift --current FOLDER [--model URI] [--reference FOLDER] [--json] [--plot PNG]
    wastesort shadow --champion URI --challenger URI --captures SOURCE [--json] [--sheet PNG]

Exit codes: 0 everything succeeded, 1 some images failed (`registry rollout-check`: it aborted
a rollout), 2 a usage error or a model that cannot be loaded. User errors print one line,
never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wastesort import classify_cli, drift_cli, export, shadow_cli
from wastesort.errors import WastesortError
from wastesort.registry import rollout_cli

if TYPE_CHECKING:
    from wastesort.manifest import Manifest

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wastesort", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    classify_cli.add_parser(commands)
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
    rollout_cli.add_promote_options(promote)
    rollback = actions.add_parser("rollback", help="point an alias back at its previous version")
    rollback.add_argument("alias")
    rollback.add_argument("--reason")
    history = actions.add_parser("history", help="who moved which alias when")
    history.add_argument("alias", nargs="?")
    keygen = actions.add_parser("keygen", help="write a new ed25519 signing key pair")
    keygen.add_argument("out", type=Path, help="folder for signing.pem and signing.pub")
    rollout_cli.add_parser(actions)
    export.add_parser(commands)
    drift_cli.add_parser(commands)
    shadow_cli.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        commands = {
            "classify": classify_cli.run,
            "dataset": export.run,
            "drift": drift_cli.run,
            "shadow": shadow_cli.run,
        }
        return commands.get(args.command, _registry)(args)
    except WastesortError as exc:
        print(f"wastesort: error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `wastesort classify ... | head`
        sys.stderr.close()
        return EXIT_OK


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
                "aliases": rollout_cli.aliases_on(manifest, v.version),
                "accuracy": _headline(v.metrics, "accuracy"),
                "macro_f1": _headline(v.metrics, "macro_f1"),
                "sha256": v.sha256,
            }
            for v in manifest.versions.values()
        ]
        return _print_rows(rows, args.json)
    if args.action == "show":
        return _show(registry.manifest(), args)
    if args.action in ("promote", "rollout-check"):
        return rollout_cli.run(args, registry)
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
    for line in rollout_cli.in_progress(manifest):
        print(line, file=sys.stderr)
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
