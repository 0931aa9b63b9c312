"""Labels and patients for the entries of an index, from a labels file or kept from the previous index.

With a labels file, each slide takes its row's label and patient; a slide without a row keeps the label it had, and
is reported, as is every row that names no slide. Without a labels file, every slide keeps its stored label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gapless.pipeline.slides.inputs import label_row


@dataclass
class LabelReport:
    unlabelled: list[str] = field(default_factory=list)  # slides without a row
    unmatched_rows: list[str] = field(default_factory=list)  # rows (their slide column) that name no slide
    changed: int = 0  # slides whose label or patient changed


def apply_labels(
    entries: list[dict[str, Any]],
    labels: dict[str, dict[str, str]] | None,
    previous: dict[str, dict[str, Any]],
    found: set[str],
    discovered: list[str] = (),
) -> LabelReport:
    """Set ``label`` and ``patient`` on every entry (in place); ``found`` are the slides among this run's inputs,
    ``discovered`` every slide the inputs hold (other shards' included: their rows are not reported as strays)."""
    report, used = LabelReport(), set()
    for path in map(Path, discovered):
        used.update(key for key in (str(path), path.name, path.stem) if key in (labels or {}))
    for entry in entries:
        old = previous.get(entry["path"], {})
        before = (old.get("label", ""), old.get("patient", ""))
        entry["label"], entry["patient"] = entry.get("label", before[0]), entry.get("patient", before[1])
        if labels is None:
            continue
        path = Path(entry["path"])
        row = label_row(labels, path)
        if not row:
            if entry["path"] in found:
                report.unlabelled.append(entry["path"])
            continue
        used.update(key for key in (str(path), path.name, path.stem) if key in labels)
        entry["label"], entry["patient"] = row["label"], row.get("patient", "")
        report.changed += bool(old) and before != (entry["label"], entry["patient"])
    if labels is not None:
        report.unmatched_rows = [key for key in labels if key not in used]
    return report
