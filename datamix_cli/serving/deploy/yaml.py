"""A minimal YAML emitter for the plain dicts, lists and scalars of a Kubernetes manifest (no PyYAML needed)."""

from __future__ import annotations

import json


def to_yaml(node, indent: int = 0) -> str:
    """Block YAML for nested dicts and lists of strings and numbers; strings are JSON-quoted (valid YAML)."""
    pad = "  " * indent
    if isinstance(node, dict):
        lines = []
        for key, value in node.items():
            if isinstance(value, (dict, list)) and value:
                lines.append(f"{pad}{key}:\n{to_yaml(value, indent + 1)}")
            else:
                lines.append(f"{pad}{key}: {json.dumps(value)}")
        return "\n".join(lines)
    if isinstance(node, list):
        return "\n".join(f"{pad}- {json.dumps(item)}" if not isinstance(item, (dict, list)) else f"{pad}-\n{to_yaml(item, indent + 1)}" for item in node)
    return f"{pad}{json.dumps(node)}"
