"""Convert between plain Python values and DynamoDB's typed attribute values."""

from __future__ import annotations

from typing import Any


def to_attr(value: Any) -> dict[str, Any]:
    """Python value -> DynamoDB AttributeValue."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, (int, float)):
        return {"N": repr(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, (list, tuple)):
        return {"L": [to_attr(v) for v in value]}
    if isinstance(value, dict):
        return {"M": {str(k): to_attr(v) for k, v in value.items()}}
    raise TypeError(f"cannot store {type(value).__name__} in DynamoDB")


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    """A dict of plain values -> a DynamoDB item."""
    return {k: to_attr(v) for k, v in values.items()}


def from_attr(attr: dict[str, Any]) -> Any:
    """DynamoDB AttributeValue -> Python value."""
    ((kind, value),) = attr.items()
    if kind == "S" or kind == "BOOL":
        return value
    if kind == "N":
        return int(value) if value.lstrip("-").isdigit() else float(value)
    if kind == "NULL":
        return None
    if kind == "L":
        return [from_attr(v) for v in value]
    if kind == "M":
        return {k: from_attr(v) for k, v in value.items()}
    if kind == "SS":
        return set(value)
    raise TypeError(f"unsupported DynamoDB type {kind}")


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB item -> a dict of plain values."""
    return {k: from_attr(v) for k, v in item.items()}
