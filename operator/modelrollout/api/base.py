"""The base every API model shares: camelCase on the wire, and validation rules
written once and enforced twice.

A `Rule` carries a CEL expression for the API server (`x-kubernetes-validations`)
and a Python predicate for everything that reads manifests without one (the
operator, `modelrollout lint`). The unit tests hold both sides to the same cases.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, GetJsonSchemaHandler, model_validator
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema


@dataclass(frozen=True)
class Rule:
    """One validation rule, stated in CEL and in Python with the same message.

    `cel` is None where the schema itself says it (a list-map key, say) and only
    the Python side needs the words.
    """

    cel: str | None
    message: str
    holds: Callable[[Any], bool]
    field_path: str | None = None


class ApiModel(BaseModel):
    """Strict on input: an unknown field is a typo, not something to ignore."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=False,
    )
    rules: ClassVar[tuple[Rule, ...]] = ()

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        if any(r.cel for r in cls.rules):
            target["x-kubernetes-validations"] = [_cel(r) for r in cls.rules if r.cel]
        return schema

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        broken = [rule.message for rule in type(self).rules if not rule.holds(self)]
        if broken:
            raise ValueError("; ".join(broken))
        return self

    def to_wire(self) -> dict[str, Any]:
        """The camelCase dict the API server stores, without unset optionals."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class StatusModel(ApiModel):
    """Status is written by us and read back after upgrades: tolerate unknown keys."""

    model_config = ConfigDict(extra="ignore")


def _cel(rule: Rule) -> dict[str, str]:
    assert rule.cel is not None
    entry = {"rule": rule.cel, "message": rule.message}
    if rule.field_path:
        entry["fieldPath"] = rule.field_path
    return entry
