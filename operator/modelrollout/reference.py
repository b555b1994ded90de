"""The drift reference: a training distribution as bin edges and proportions.

`modelrollout reference build` writes it, a ConfigMap carries it, the drift gate and
`modelrollout psi` read it, and the model server instruments its histograms with its
edges. Numeric bins follow Prometheus' `le` convention: bin i holds values in
(edges[i-1], edges[i]], the first bin everything up to edges[0], the last everything
above the last edge. So the per-bin counts a histogram exports are the bins here.
"""

from __future__ import annotations

import math
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

FORMAT = "rollouts.mlops.io/drift-reference-v1"
CONFIG_MAP_KEY = "reference.yaml"
SUM_TOLERANCE = 1e-6


class ReferenceProblem(ValueError):
    """The reference cannot be used; says which key and why."""


class Distribution(BaseModel):
    """One feature's (or the scores') reference: numeric edges or categories."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    edges: tuple[float, ...] | None = None
    categories: tuple[str, ...] | None = None
    proportions: tuple[float, ...]

    @model_validator(mode="after")
    def _consistent(self) -> Distribution:
        if (self.edges is None) == (self.categories is None):
            raise ValueError("needs exactly one of edges (numeric) or categories")
        if self.edges is not None:
            if not all(math.isfinite(e) for e in self.edges):
                raise ValueError("edges must be finite; the last bin is open above")
            if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
                raise ValueError("edges must be strictly increasing")
            bins = len(self.edges) + 1
        else:
            assert self.categories is not None
            if len(set(self.categories)) != len(self.categories):
                raise ValueError("categories must be unique")
            bins = len(self.categories)
        if bins < 2:
            raise ValueError("needs at least two bins")
        if len(self.proportions) != bins:
            raise ValueError(f"has {len(self.proportions)} proportions for {bins} bins")
        if any(not math.isfinite(p) or p < 0 for p in self.proportions):
            raise ValueError("proportions must be finite and non-negative")
        if abs(sum(self.proportions) - 1) > SUM_TOLERANCE:
            raise ValueError(f"proportions sum to {sum(self.proportions):.9g}, not 1")
        return self

    @property
    def labels(self) -> tuple[str, ...]:
        """Bin keys as they appear in Prometheus: `le` values or category names."""
        if self.categories is not None:
            return self.categories
        assert self.edges is not None
        return (*(repr(e) for e in self.edges), "+Inf")


class Reference(BaseModel):
    """Every feature's reference distribution, and how many rows it was built from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = FORMAT
    samples: int = Field(ge=1, description="Rows the proportions were computed from.")
    features: tuple[Distribution, ...] = Field(min_length=1)
    score: Distribution | None = None

    @model_validator(mode="after")
    def _unique(self) -> Reference:
        if self.format != FORMAT:
            raise ValueError(f"format must be {FORMAT}")
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        return self

    def feature(self, name: str) -> Distribution | None:
        return next((f for f in self.features if f.name == name), None)

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True)
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120)


def parse_reference(text: str, key: str = CONFIG_MAP_KEY) -> Reference:
    """Read a reference, or raise ReferenceProblem naming the key and the problem."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ReferenceProblem(f"key {key}: not YAML: {error}") from error
    if not isinstance(data, dict):
        raise ReferenceProblem(f"key {key}: expected a mapping, got {type(data).__name__}")
    try:
        return Reference.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in error.errors()
        )
        raise ReferenceProblem(f"key {key}: {problems}") from error


def config_map(name: str, reference: Reference, key: str = CONFIG_MAP_KEY) -> dict[str, Any]:
    """The reference as a ConfigMap manifest, ready for `kubectl apply`."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "modelrollout"}},
        "data": {key: reference.to_yaml()},
    }
