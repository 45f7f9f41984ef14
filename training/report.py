"""The run's report (also its model card in MLflow): what was trained on what, and how well."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training import compare, per_source


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def render(summary: dict[str, Any], labels: Sequence[str]) -> str:
    test = summary["test"]
    lines = [
        f"# wastesort model {summary['version']}",
        "",
        f"- dataset fingerprint: `{summary['dataset_fingerprint']}`",
        f"- git commit: `{summary.get('git_commit')}`",
        f"- split sizes: {summary['data']['split_sizes']}",
        f"- {summary['gate']['message']}",
        f"- Edge TPU: {summary['variants']['int8'].get('edgetpu')}",
        f"- int8 integer-only: {summary['variants']['int8'].get('integer_only')} "
        f"(float ops: {', '.join(summary['variants']['int8'].get('float_ops') or []) or 'none'})",
        "",
        "## Test split",
        "",
        "| model | size | accuracy | macro-F1 | ECE (T=1) | ECE | T | agreement with float | "
        + " | ".join(f"recall {label}" for label in labels)
        + " |",
        "| --- " * (8 + len(labels)) + "|",
    ]
    for name, m in test.items():
        size = f"{m['size_bytes'] / 1e6:.2f} MB" if m.get("size_bytes") else "-"
        recalls = " | ".join(f"{m['per_class_recall'][label]:.3f}" for label in labels)
        lines.append(
            f"| {name} | {size} | {_pct(m['accuracy'])} | {m['macro_f1']:.4f} | "
            f"{m['ece_uncalibrated']:.4f} | {m['ece']:.4f} | {m['temperature']:.3f} | "
            f"{_pct(m['agreement_with_float'])} | {recalls} |"
        )
    u = summary["uncertain"]
    lines += [
        "",
        "`keras` is the float model run directly; every other row ran through "
        "`wastesort.Classifier`.",
        "",
        "## Uncertain threshold (fit on validation, int8)",
        "",
        f"Threshold {u['threshold']} (lowest confidence at which decided validation images reach "
        f"{_pct(u['target_accuracy'])} accuracy): validation coverage {_pct(u['val_coverage'])} "
        f"at {_pct(u['val_accuracy_decided'])}; test coverage {_pct(u['test_coverage'])} at "
        f"{_pct(u['test_accuracy_decided'])}.",
        *uncertain_rule_lines(u),
        "",
        "| threshold | val coverage | val accuracy of decided |",
        "| --- | --- | --- |",
    ]
    lines += [
        f"| {r['threshold']} | {_pct(r['coverage'])} | {_pct(r['accuracy'])} |"
        for r in u["tradeoff_val"]
    ]
    lines += _data(summary["data"], labels)
    lines += ["", "## Per source", ""]
    lines += [
        "Every variant at the published `uncertain` threshold (its own temperature). `held_out`: "
        "a train source's test split; `eval`: never trained on; `field`: the eval sources "
        "together; `union`: every scored photo of the classes.",
    ]
    for variant, rows in summary.get("per_source", {}).items():
        lines += ["", f"### {variant}", "", *per_source.render(rows, labels)]
    lines += ["", "## Against the champion", "", *compare.render(summary["champion"])]
    lines += ["", "## Timings (s)", ""]
    lines += [f"- {k}: {v}" for k, v in summary["timings_s"].items()]
    lines += ["", "## Hardest mistakes (int8, most confident errors)", ""]
    lines += [
        f"- {m['path']}: {m['true']} -> {m['predicted']} ({m['confidence']:.2f})"
        for m in summary["hardest_mistakes"]
    ]
    lines += source_sheet_lines(summary.get("hardest_by_source", {}))
    return "\n".join(lines) + "\n"


def source_sheet_lines(sheets: dict[str, Any]) -> list[str]:
    """Per photo set: its sheet of the most confident mistakes (with Grad-CAM or not)."""
    if not sheets:
        return []
    lines = ["", "### Per source (sheets in `plots/`; the map is the float model's Grad-CAM)", ""]
    for name, s in sheets.items():
        shown = ", ".join(
            f"{m['true']} -> {m['predicted']} ({m['confidence']:.2f})" for m in s["mistakes"][:3]
        )
        cam = "with Grad-CAM" if s["gradcam"] else "photos only"
        lines.append(
            f"- {name}: `{s['sheet']}` ({cam}), {len(s['mistakes'])} shown: {shown or 'none'}"
        )
    return lines


def uncertain_rule_lines(u: dict[str, Any]) -> list[str]:
    """What the `per_source` threshold rule chose and the coverage it cost (none: pooled)."""
    if u.get("rule") != "per_source":
        return []
    met = "met" if u["target_met"] else "not met below the cap"
    lines = [
        "",
        f"Rule `per_source`: every train source confidently wrong at most "
        f"{_pct(u['max_confidently_wrong'])} on validation ({met}); the pooled rule's threshold "
        f"{u['pooled_threshold']} would decide {_pct(u['pooled_val_coverage'])}, so it costs "
        f"{_pct(u['coverage_cost'])} of coverage.",
    ]
    lines += [
        f"- {name}: {r['n']} validation photos, {_pct(r['coverage'])} decided, "
        f"{_pct(r['confidently_wrong'])} confidently wrong"
        for name, r in u.get("by_source_val", {}).items()
    ]
    return lines


def _data(data: dict[str, Any], labels: Sequence[str]) -> list[str]:
    """Photos per source and class, and how each source was split."""
    lines = [
        "",
        "## Data",
        "",
        "| source | role | " + " | ".join(labels) + " | none of the classes | train / val / test |",
        "| --- " * (len(labels) + 4) + "|",
    ]
    for name, r in data.get("sources", {}).items():
        counts = " | ".join(str(r["per_class"].get(label, 0)) for label in labels)
        sizes = r.get("split_sizes")
        split = f"{sizes['train']} / {sizes['val']} / {sizes['test']}" if sizes else "-"
        lines.append(f"| {name} | {r['role']} | {counts} | {r['unmapped']} | {split} |")
    return lines


def write_report(run_dir: Path, summary: dict[str, Any], labels: Sequence[str]) -> Path:
    path = run_dir / "model_card.md"
    path.write_text(render(summary, labels))
    return path
