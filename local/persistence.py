"""Optional local data that survives `make dev` restarts: moto's tables and the secrets URLs depend on.

moto server keeps everything in memory. With SIGSTREAM_PERSIST=1 the stack saves a snapshot when it
stops (every item of every table, and the values of the secrets whose roles are listed here) and loads
it when it starts, after creating the template's resources. Signed URLs and SW1 URLs stay valid across
a restart because their keys are restored; the provider key is always taken from the current run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SNAPSHOT_VERSION = 1
PERSISTED_SECRET_ROLES = ("signing-keys", "sw1-app-secret")
_BATCH = 25  # BatchWriteItem's limit


def dump_tables(dynamodb: Any, tables: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Every item of each table (logical id -> name), in DynamoDB JSON."""
    out: dict[str, list[dict[str, Any]]] = {}
    for logical_id, name in tables.items():
        items: list[dict[str, Any]] = []
        for page in dynamodb.get_paginator("scan").paginate(TableName=name, ConsistentRead=True):
            items.extend(page["Items"])
        out[logical_id] = items
    return out


def load_tables(dynamodb: Any, tables: dict[str, str], saved: dict[str, list[dict[str, Any]]]) -> int:
    """Write saved items back (tables are matched by logical id, so renamed stacks still load)."""
    count = 0
    for logical_id, items in saved.items():
        name = tables.get(logical_id)
        if name is None:
            continue
        for start in range(0, len(items), _BATCH):
            requests = [{"PutRequest": {"Item": item}} for item in items[start : start + _BATCH]]
            pending: dict[str, Any] = {name: requests}
            while pending:
                pending = dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
        count += len(items)
    return count


def save_snapshot(path: Path, tables: dict[str, list[dict[str, Any]]], secrets: dict[str, str]) -> None:
    """Write atomically: a reader (the next start) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    doc = {"version": SNAPSHOT_VERSION, "tables": tables, "secrets": secrets}
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)


def set_aside_path(path: Path) -> Path:
    """Where an unreadable snapshot is moved, so that the next save does not overwrite the user's data."""
    return path.with_name(path.name + ".unreadable")


def read_snapshot(path: Path) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
    """(tables, secrets) from a snapshot, or empty ones when there is none.

    An unreadable one (broken JSON, another version) is moved to set_aside_path(path) first: starting
    empty is fine, silently replacing it with an empty snapshot at the next stop is not.
    """
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}, {}
    except (OSError, ValueError):
        doc = None
    if not isinstance(doc, dict) or doc.get("version") != SNAPSHOT_VERSION:
        path.replace(set_aside_path(path))
        return {}, {}
    secrets = {k: v for k, v in (doc.get("secrets") or {}).items() if k in PERSISTED_SECRET_ROLES}
    return dict(doc.get("tables") or {}), secrets
