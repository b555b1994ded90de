"""The generated CRD: complete descriptions, rules, columns, and committed fresh."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from modelrollout.api import crd as crd_module
from modelrollout.api.base import ApiModel
from modelrollout.api.crd import CRD_TARGETS, crd

ROOT = Path(__file__).parents[2]


def _properties(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for name, sub in schema.get("properties", {}).items():
        yield f"{path}.{name}", sub
        yield from _properties(sub, f"{path}.{name}")
    if "items" in schema:
        yield from _properties(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _properties(schema["additionalProperties"], f"{path}{{}}")


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_every_field_has_a_description_for_kubectl_explain() -> None:
    undocumented = [
        path
        for path, sub in _properties(_schema())
        if path != ".metadata" and not sub.get("description")
    ]
    assert undocumented == []


def test_the_schema_is_structural() -> None:
    for path, sub in _properties(_schema()):
        assert "type" in sub, f"{path} has no type"
        for forbidden in ("$ref", "anyOf", "allOf", "oneOf", "title", "default", "const"):
            assert forbidden not in sub, f"{path} has {forbidden}"


def _cel_rules(node: Any) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for rule in node.get("x-kubernetes-validations", []):
            yield rule["rule"], rule["message"]
        for value in node.values():
            yield from _cel_rules(value)
    elif isinstance(node, list):
        for value in node:
            yield from _cel_rules(value)


def test_every_cel_rule_of_the_models_is_in_the_crd() -> None:
    in_crd = set(_cel_rules(_schema()))
    rules = [
        rule for model in _all_models(ApiModel) for rule in model.rules if rule.cel is not None
    ]
    assert len(rules) >= 15
    assert {(r.cel, r.message) for r in rules} == in_crd


def _all_models(base: type[ApiModel]) -> set[type[ApiModel]]:
    found = set()
    for sub in base.__subclasses__():
        found |= {sub} | _all_models(sub)
    return found


def test_names_columns_and_subresource() -> None:
    spec = crd()["spec"]
    assert spec["group"] == "rollouts.mlops.io"
    assert spec["names"]["shortNames"] == ["mro"]
    assert spec["names"]["categories"] == ["ml"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Stable", "Candidate", "Phase", "Stage", "Weight", "Drift", "Age"]
    status = _schema()["properties"]["status"]["properties"]
    assert status["observedGeneration"]["type"] == "integer"


def test_committed_crd_files_match_the_models() -> None:
    assert crd_module.main(["--check", "--root", str(ROOT)]) == 0
    for target in CRD_TARGETS:
        assert yaml.safe_load((ROOT / target).read_text()) == crd()
