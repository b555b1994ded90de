"""Drift references from ConfigMaps: read every tick, parsed once per version."""

from __future__ import annotations

from modelrollout.api.objects import CONFIG_MAP
from modelrollout.api.spec import DriftGate
from modelrollout.ports import Objects
from modelrollout.reference import Reference, ReferenceProblem, parse_reference


class ReferenceMissing(Exception):
    """The reference ConfigMap does not exist (yet)."""


class ReferenceCache:
    """Parsed references by ConfigMap and resourceVersion."""

    def __init__(self, objects: Objects) -> None:
        self.objects = objects
        self._parsed: dict[tuple[str, str, str], Reference] = {}

    async def get(self, namespace: str, gate: DriftGate) -> Reference | None:
        """The configMapRef reference (None for the stable reference). Raises
        ReferenceMissing or ReferenceProblem naming the key and the problem."""
        ref = gate.reference.config_map_ref
        if ref is None:
            return None
        config_map = await self.objects.get(CONFIG_MAP, namespace, ref.name)
        if config_map is None:
            raise ReferenceMissing(f"ConfigMap {ref.name} not found")
        key = (namespace, ref.name, str(config_map["metadata"].get("resourceVersion")))
        if key not in self._parsed:
            text = (config_map.get("data") or {}).get(ref.key)
            if text is None:
                raise ReferenceProblem(f"ConfigMap {ref.name} has no key {ref.key}")
            reference = parse_reference(text, f"{ref.name}/{ref.key}")
            _covers(reference, gate, f"ConfigMap {ref.name} key {ref.key}")
            self._parsed = {k: v for k, v in self._parsed.items() if k[:2] != key[:2]}
            self._parsed[key] = reference
        return self._parsed[key]


def _covers(reference: Reference, gate: DriftGate, where: str) -> None:
    numeric = list(gate.features)
    categorical = list(gate.categorical.features) if gate.categorical else []
    for name in numeric + categorical:
        found = reference.feature(name)
        if found is None:
            raise ReferenceProblem(f"{where}: no feature {name}")
        if (found.edges is None) == (name in numeric):
            kind = "numeric" if name in numeric else "categorical"
            raise ReferenceProblem(f"{where}: feature {name} is {kind} in the gate, not there")
    if gate.score_histogram and reference.score is None:
        raise ReferenceProblem(f"{where}: no score distribution for {gate.score_histogram}")
