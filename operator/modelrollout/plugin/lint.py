"""`lint`: check ModelRollout manifests offline with the API models, so a broken
rollout is caught in review rather than at `kubectl apply`.

The models hold the schema's patterns and bounds and the Python side of every CEL
rule in the CRD (api/base.py `Rule`), so lint refuses what the API server refuses.
What only the operator can see (a missing Deployment, a route claimed twice) needs
the cluster.
"""

from __future__ import annotations

import re
import sys
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from modelrollout.api.base import ApiModel
from modelrollout.api.resource import GROUP, KIND, VERSION
from modelrollout.api.spec import ModelRolloutSpec

API_VERSION = f"{GROUP}/{VERSION}"
_VALUE_ERROR = "Value error, "


@dataclass(frozen=True)
class Problem:
    path: str
    message: str


def lint(paths: Sequence[str], out: TextIO) -> int:
    """Print every problem with its document and field path; 1 if there was one."""
    found = checked = 0
    for path in paths:
        try:
            docs = list(_documents(path))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            print(f"{path}: cannot read: {' '.join(str(error).split())}", file=out)
            found += 1
            continue
        for where, doc in docs:
            if not _is_rollout(doc):
                kind = doc.get("kind") if isinstance(doc, dict) else type(doc).__name__
                print(f"{where}: skipped, not a ModelRollout ({kind or 'no kind'})", file=out)
                continue
            checked += 1
            name = (doc.get("metadata") or {}).get("name") or "(no name)"
            for problem in check(doc):
                print(f"{where} {name}: {problem.path}: {problem.message}", file=out)
                found += 1
    noun = "ModelRollout" if checked == 1 else "ModelRollouts"
    if found:
        print(f"{found} problem{'s' * (found != 1)} ({checked} {noun} checked)", file=out)
        return 1
    print(f"{checked} {noun} valid", file=out)
    return 0


def _documents(path: str) -> Iterator[tuple[str, Any]]:
    """Each non-empty document, with items of a List one by one."""
    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    for index, doc in enumerate(yaml.safe_load_all(text), start=1):
        if doc is None:
            continue
        if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List"):
            for item_index, item in enumerate(doc.get("items") or []):
                yield f"{path}#{index}.items[{item_index}]", item
        else:
            yield f"{path}#{index}", doc


def _is_rollout(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("kind") == KIND


def check(doc: dict[str, Any]) -> list[Problem]:
    problems = []
    api_version = doc.get("apiVersion")
    if api_version != API_VERSION:
        problems.append(Problem("apiVersion", f"must be {API_VERSION}, not {api_version!r}"))
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        problems.append(Problem("metadata.name", "required"))
    if "spec" not in doc:
        return [*problems, Problem("spec", "required")]
    try:
        ModelRolloutSpec.model_validate(doc["spec"])
    except ValidationError as error:
        _, broken = _rules(ModelRolloutSpec, doc["spec"], "spec")
        said = {p.message for p in broken}
        for detail in error.errors():
            problems += _field_problem(detail, said)
        problems += broken
    return sorted(problems, key=lambda p: _natural(p.path))


def _field_problem(detail: ErrorDetails, said: set[str]) -> list[Problem]:
    """Pydantic's own finding (type, pattern, bounds, unknown field); a broken rule
    is left to `_rules`, which names the rule's own field."""
    path = "spec" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in detail["loc"])
    message = detail["msg"]
    if detail["type"] == "value_error":
        text = message.removeprefix(_VALUE_ERROR)
        return [] if any(m in text for m in said) else [Problem(path, text)]
    value = detail.get("input")
    if detail["type"] != "missing" and not isinstance(value, dict | list):
        message += f" (got {value!r})"
    return [Problem(path, message)]


def _rules(model: type[ApiModel], data: Any, path: str) -> tuple[Any, list[Problem]]:
    """Every rule of `model` and the models inside it, checked on an unvalidated copy.

    Pydantic checks a model's rules only once all its fields are valid, so one typo
    would hide every other broken rule; the API server reports them all, and so does
    lint. A rule that cannot be evaluated on the broken data is skipped.
    """
    if not isinstance(data, dict):
        return data, []
    values: dict[str, Any] = {}
    problems: list[Problem] = []
    for name, field in model.model_fields.items():
        key = next((k for k in (field.alias, name) if k and k in data), None)
        if key is None:
            if not field.is_required():
                values[name] = field.get_default(call_default_factory=True)
            continue
        values[name], found = _nested(field.annotation, data[key], f"{path}.{key}")
        problems += found
    instance = model.model_construct(**values)
    for rule in model.rules:
        try:
            holds = rule.holds(instance)
        except Exception:
            continue
        if not holds:
            problems.append(Problem(path + (rule.field_path or ""), rule.message))
    return instance, problems


def _nested(annotation: Any, raw: Any, path: str) -> tuple[Any, list[Problem]]:
    model = _model_in(annotation)
    if model is None:
        return raw, []
    if not isinstance(raw, list):
        return _rules(model, raw, path)
    items, problems = [], []
    for index, item in enumerate(raw):
        value, found = _rules(model, item, f"{path}[{index}]")
        items.append(value)
        problems += found
    return items, problems


def _model_in(annotation: Any) -> type[ApiModel] | None:
    """The model inside `X`, `X | None` or `list[X]`."""
    if isinstance(annotation, type) and issubclass(annotation, ApiModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _natural(path: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]
