"""The typed manifest sections and the JSON Schema say the same thing, key for key."""

import json
import typing

import pytest

from datamix_cli.artifacts.manifest import SCHEMA_PATH
from datamix_cli.artifacts.sections import SECTIONS, TensorSpec

SCHEMA = json.loads(SCHEMA_PATH.read_text())


def schema_node(section: str) -> dict:
    node = SCHEMA["properties"][section]
    return node["items"] if node.get("type") == "array" else node


def keys(typed) -> tuple[set, set]:
    hints = typing.get_type_hints(typed, include_extras=True)
    optional = {k for k, v in hints.items() if typing.get_origin(v) is typing.NotRequired}
    return set(hints), set(hints) - optional


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_each_typed_section_has_the_schemas_keys_and_required_keys(section):
    node = schema_node(section)
    every, required = keys(SECTIONS[section])
    assert every == set(node["properties"]), section
    assert required == set(node.get("required", [])), section


def test_tensor_specs_match_the_schema():
    node = SCHEMA["$defs"]["tensor"]
    every, required = keys(TensorSpec)
    assert every == set(node["properties"]) and required == set(node["required"])


def test_every_typed_section_is_in_the_schema():
    assert set(SECTIONS) <= set(SCHEMA["properties"])
