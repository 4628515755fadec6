"""``syndicate import FILE|DIR``: JSON and NDJSON files into the store, in batches."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from storage import Storage
from syndicate.content.ingest import STATUSES, store_batch
from syndicate.content.models import MAX_TOPICS
from syndicate.core.errors import InvalidInput

DEFAULT_IMPORT_BATCH = 500
IMPORT_SUFFIXES = (".json", ".ndjson", ".jsonl")


class ImportFileError(InvalidInput):
    """A file could not be read as JSON or NDJSON at all."""


@dataclass
class ImportReport:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    rejected: list[tuple[str, list[dict[str, str]]]] = field(default_factory=list)

    def print(self, out: TextIO) -> None:
        parts = ", ".join(f"{self.counts[s]} {s}" for s in STATUSES)
        out.write(f"imported: {parts}\n")
        for where, errors in self.rejected:
            for error in errors:
                out.write(f"  rejected {where}: {error['field']}: {error['message']}\n")


def find_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in IMPORT_SUFFIXES and p.is_file())
    if not path.exists():
        raise ImportFileError(f"{path}: no such file or directory")
    return [path]


def read_items(path: Path) -> Iterator[tuple[str, Any]]:
    """``(where, item)`` for every article in the file: where is ``file:line`` or ``file[i]``."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFileError(f"{path}: cannot read: {exc}") from None
    stripped = text.lstrip()
    if path.suffix in (".ndjson", ".jsonl") or not stripped.startswith(("{", "[")):
        yield from _ndjson(path, text)
        return
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        if stripped.startswith("{") and "\n{" in text:
            yield from _ndjson(path, text)
            return
        raise ImportFileError(f"{path}: malformed JSON: {exc}") from None
    if isinstance(document, dict) and isinstance(document.get("articles"), list):
        items = document["articles"]
    elif isinstance(document, list):
        items = document
    elif isinstance(document, dict):
        items = [document]
    else:
        raise ImportFileError(f'{path}: expected {{"articles": [...]}}, a list, or NDJSON')
    for index, item in enumerate(items):
        yield f"{path.name}[{index}]", item


def _ndjson(path: Path, text: str) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name}:{number}"
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as exc:
            yield where, _Malformed(str(exc))


class _Malformed:
    """A line that is not JSON: reported as rejected, never stored."""

    def __init__(self, message: str) -> None:
        self.message = message


async def import_paths(
    storage: Storage,
    paths: list[Path],
    *,
    host: str,
    batch_size: int = DEFAULT_IMPORT_BATCH,
    progress: bool = True,
    max_topics: int = MAX_TOPICS,
) -> ImportReport:
    report = ImportReport()
    files = [f for p in paths for f in find_files(p)]
    with tqdm(unit=" articles", disable=not progress, desc="importing") as bar:
        for file in files:
            pending: list[tuple[str, Any]] = []
            for entry in read_items(file):
                pending.append(entry)
                if len(pending) >= batch_size:
                    await _flush(storage, pending, host, report, bar, max_topics)
            await _flush(storage, pending, host, report, bar, max_topics)
    return report


async def _flush(
    storage: Storage,
    pending: list[tuple[str, Any]],
    host: str,
    report: ImportReport,
    bar: tqdm[Any],
    max_topics: int,
) -> None:
    if not pending:
        return
    good = [(where, item) for where, item in pending if not isinstance(item, _Malformed)]
    for where, item in pending:
        if isinstance(item, _Malformed):
            report.counts["rejected"] += 1
            report.rejected.append((where, [{"field": "line", "message": item.message}]))
    results = await store_batch(
        storage,
        [item for _, item in good],
        host=host,
        fields=[w for w, _ in good],
        max_topics=max_topics,
    )
    for (where, _), result in zip(good, results, strict=True):
        report.counts[result["status"]] += 1
        if result["status"] == "rejected":
            report.rejected.append((where, result["errors"]))
    bar.update(len(pending))
    pending.clear()
