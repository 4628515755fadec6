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
from syndicate.core.errors import InvalidInput
from syndicate.core.settings import MAX_TOPICS_PER_ARTICLE

DEFAULT_IMPORT_BATCH = 500
IMPORT_SUFFIXES = (".json", ".ndjson", ".jsonl")


class ImportFileError(InvalidInput):
    """A file could not be read as JSON or NDJSON at all."""


class NothingToImport(ImportFileError):
    """The paths hold no import file, or the files no article: a mistake worth an exit
    status (an export that produced nothing, a wrong folder), not a quiet success."""


@dataclass
class ImportReport:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    rejected: list[tuple[str, list[dict[str, str]]]] = field(default_factory=list)

    def print(self, out: TextIO) -> None:
        """The counts, then each rejected article's location once, its errors under it
        (fields named within the article: ``topics``, not ``file:3.topics``)."""
        parts = ", ".join(f"{self.counts[s]} {s}" for s in STATUSES)
        out.write(f"imported: {parts}\n")
        for where, errors in self.rejected:
            out.write(f"rejected {where}\n")
            for error in errors:
                name = error["field"].removeprefix(where).removeprefix(".")
                out.write(
                    f"    {name}: {error['message']}\n" if name else f"    {error['message']}\n"
                )


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


def count_items(path: Path) -> int:
    """How many articles ``read_items`` will yield (an NDJSON file's lines are counted,
    not parsed)."""
    if path.suffix in (".ndjson", ".jsonl"):
        try:
            with path.open("rb") as lines:
                return sum(1 for line in lines if line.strip())
        except OSError as exc:
            raise ImportFileError(f"{path}: cannot read: {exc}") from None
    return sum(1 for _ in read_items(path))


def _ndjson(path: Path, text: str) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name}:{number}"
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as exc:
            yield where, _Malformed(f"not JSON: {exc}")


class _Malformed:
    """A line that is not JSON: reported as rejected, never stored."""

    def __init__(self, message: str) -> None:
        self.message = message


def count_paths(paths: list[Path]) -> tuple[list[Path], int]:
    """The import files in ``paths`` and how many articles they hold, read without a
    database: ``ImportFileError`` for a malformed file, ``NothingToImport`` when there
    is no article at all."""
    files = [f for p in paths for f in find_files(p)]
    if not files:
        names = ", ".join(str(p) for p in paths)
        kinds = ", ".join(IMPORT_SUFFIXES)
        raise NothingToImport(f"nothing to import: no {kinds} files in {names}")
    total = sum(count_items(f) for f in files)
    if total == 0:
        names = ", ".join(str(f) for f in files)
        raise NothingToImport(f"nothing to import: no articles in {names}")
    return files, total


async def import_paths(
    storage: Storage,
    paths: list[Path],
    *,
    host: str,
    batch_size: int = DEFAULT_IMPORT_BATCH,
    progress: bool = True,
    max_topics: int = MAX_TOPICS_PER_ARTICLE,
    counted: tuple[list[Path], int] | None = None,
    base_url: str | None = None,
) -> ImportReport:
    """Import every article in ``paths`` (files, or folders searched for
    ``IMPORT_SUFFIXES``). The files are counted first (``count_paths``, or ``counted``:
    its result), so that the progress bar has a total, a rate and an ETA, and a
    malformed file stops the import before it starts. ``NothingToImport`` when there
    is no article at all. Relative links in content are resolved against each
    article's URL, as the API does (``articles.to_draft``; its permalink under
    ``base_url``)."""
    report = ImportReport()
    files, total = counted or count_paths(paths)
    with tqdm(total=total, unit=" articles", disable=not progress, desc="importing") as bar:
        for file in files:
            pending: list[tuple[str, Any]] = []
            for entry in read_items(file):
                pending.append(entry)
                if len(pending) >= batch_size:
                    await _flush(storage, pending, (host, base_url), report, bar, max_topics)
            await _flush(storage, pending, (host, base_url), report, bar, max_topics)
    return report


async def _flush(
    storage: Storage,
    pending: list[tuple[str, Any]],
    site: tuple[str, str | None],
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
            report.rejected.append((where, [{"field": "", "message": item.message}]))
    results = await store_batch(
        storage,
        [item for _, item in good],
        host=site[0],
        base_url=site[1],
        fields=[w for w, _ in good],
        max_topics=max_topics,
    )
    for (where, _), result in zip(good, results, strict=True):
        report.counts[result["status"]] += 1
        if result["status"] == "rejected":
            report.rejected.append((where, result["errors"]))
    bar.update(len(pending))
    pending.clear()
