"""ModelRollout spec: what the user declares and keeps in Git.

Every field's description is what `kubectl explain` shows, so it is written for
the person reading it there.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from modelrollout.api.base import ApiModel, Rule
from modelrollout.api.durations import DURATION_PATTERN, parse_duration
from modelrollout.api.objects import ObjectKind

Duration = Annotated[str, Field(pattern=DURATION_PATTERN, max_length=32)]
DeploymentName = Annotated[
    str, Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", min_length=1, max_length=253)
]
ServiceName = Annotated[str, Field(pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$", max_length=63)]
ObjectName = Annotated[
    str, Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", min_length=1, max_length=253)
]
PromQL = Annotated[str, Field(min_length=1, max_length=4096)]
MetricName = Annotated[str, Field(pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$", max_length=200)]

PRESETS: dict[str, tuple[int, ...]] = {
    "1-5-25-100": (1, 5, 25, 100),
    "5-10-25-50-100": (5, 10, 25, 50, 100),
}
Preset = Literal["1-5-25-100", "5-10-25-50-100"]


class StableRef(ApiModel):
    """The Deployment serving the current model."""

    deployment: DeploymentName = Field(
        description="Name of the Deployment, in this namespace, that serves the current model."
    )
    service: ServiceName | None = Field(
        None,
        description="Service selecting only the stable pods. Required by the gatewayAPI and "
        "istio routers, which send traffic to a Service per side.",
    )
    model_version: str | None = Field(
        None,
        max_length=128,
        description="Free-text model version, shown in status and available to queries "
        "as {{stable.modelVersion}}.",
    )
    scale_down_delay: Duration | None = Field(
        None,
        description="After promotion, scale the stable Deployment to zero once this long has "
        "passed (for example 10m). Unset keeps it running.",
    )


class CandidateRef(ApiModel):
    """The Deployment serving the new model."""

    deployment: DeploymentName = Field(
        description="Name of the Deployment, in this namespace, that serves the new model."
    )
    service: ServiceName | None = Field(
        None,
        description="Service selecting only the candidate pods. Required by the gatewayAPI "
        "and istio routers.",
    )
    model_version: str | None = Field(
        None,
        max_length=128,
        description="Free-text model version, shown in status and available to queries "
        "as {{candidate.modelVersion}}.",
    )
    scale_down_delay: Duration | None = Field(
        None,
        description="After a rollback, scale the candidate Deployment to zero once this long "
        "has passed. Unset keeps it running for inspection.",
    )


_UNKNOWN = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


class RoutingMethod(ApiModel):
    """One way of moving weight. A method that drives a routing object names its kind
    here, so the controller, the machine and the RBAC all learn it from one place."""

    object_kind: ClassVar[ObjectKind | None] = None
    can_mirror: ClassVar[bool] = False
    needs_services: ClassVar[bool] = True
    can_own_object: ClassVar[bool] = False  # may create its routing object (managed)

    @property
    def object_name(self) -> str | None:
        """Name of the routing object in the rollout's namespace (None: no object)."""
        return None


class ReplicasRouting(RoutingMethod):
    """No mesh: one Service selects both Deployments and replica counts set the split."""

    needs_services: ClassVar[bool] = False

    total_replicas: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Replicas shared by stable and candidate. The candidate gets "
        "ceil(total x weight / 100), at least 1 when the weight is above 0, so the weight "
        "is approximate; status shows the effective weight. Defaults to the stable "
        "Deployment's replicas when the rollout starts.",
    )


class ManagedRoute(ApiModel):
    """The HTTPRoute is the operator's: it creates it and writes all of its spec, so Git
    (and Argo CD or Flux) never hold the route or its weights."""

    parent_refs: list[Annotated[dict[str, Any], Field(json_schema_extra=_UNKNOWN)]] = Field(
        min_length=1,
        max_length=32,
        description="The route's parentRefs (the Gateways it attaches to), as in an HTTPRoute.",
    )
    hostnames: list[Annotated[str, Field(max_length=253)]] | None = Field(
        None, max_length=16, description="The route's hostnames, as in an HTTPRoute."
    )
    port: int = Field(80, ge=1, le=65535, description="Port of both Services. Default: 80.")


class GatewayAPIRouting(RoutingMethod):
    """Weights on the two backendRefs of a Gateway API HTTPRoute rule."""

    object_kind: ClassVar[ObjectKind | None] = ObjectKind(
        "HTTPRoute", "gateway.networking.k8s.io", "v1", "httproutes"
    )
    can_mirror: ClassVar[bool] = True
    can_own_object: ClassVar[bool] = True

    http_route: ObjectName = Field(
        description="Name of the HTTPRoute (gateway.networking.k8s.io/v1) in this namespace."
    )
    rule_index: int = Field(
        0,
        ge=0,
        le=63,
        description="Index of the rule in spec.rules whose backendRefs point at the stable "
        "and candidate Services. Default: 0.",
    )
    managed_route: ManagedRoute | None = Field(
        None,
        description="Let the operator create and own the HTTPRoute (one rule to the two "
        "Services), so that GitOps tools never hold its weights. Unset: the route exists "
        "and the operator writes only the weights of rule ruleIndex.",
    )

    rules = (
        Rule(
            cel="!has(self.managedRoute) || !has(self.ruleIndex) || self.ruleIndex == 0",
            message="a managedRoute has one rule: ruleIndex must be 0",
            holds=lambda m: m.managed_route is None or m.rule_index == 0,
            field_path=".ruleIndex",
        ),
    )

    @property
    def object_name(self) -> str | None:
        return self.http_route


class IstioRouting(RoutingMethod):
    """Destination weights in an Istio VirtualService HTTP route."""

    object_kind: ClassVar[ObjectKind | None] = ObjectKind(
        "VirtualService", "networking.istio.io", "v1", "virtualservices"
    )
    can_mirror: ClassVar[bool] = True

    virtual_service: ObjectName = Field(
        description="Name of the VirtualService (networking.istio.io) in this namespace."
    )
    route_name: str | None = Field(
        None,
        max_length=253,
        description="Name of the entry in spec.http to manage. Unset means the first entry.",
    )

    @property
    def object_name(self) -> str | None:
        return self.virtual_service


class TrafficRouting(ApiModel):
    """How the candidate's weight reaches the data plane. Set exactly one method."""

    replicas: ReplicasRouting | None = Field(
        None, description="Realise the weight as a replica ratio behind one Service (no mesh)."
    )
    gateway_api: GatewayAPIRouting | None = Field(
        None, alias="gatewayAPI", description="Set weights on a Gateway API HTTPRoute rule."
    )
    istio: IstioRouting | None = Field(
        None, description="Set weights on an Istio VirtualService HTTP route."
    )

    @property
    def method(self) -> RoutingMethod:
        """The one method set (the rule below guarantees exactly one)."""
        chosen = [m for m in self.methods() if m is not None]
        assert len(chosen) == 1, chosen
        return chosen[0]

    def methods(self) -> list[RoutingMethod | None]:
        return [getattr(self, name) for name in type(self).model_fields]

    @property
    def can_mirror(self) -> bool:
        return self.method.can_mirror


def routing_methods(where: str = "self") -> dict[str, tuple[str, type[RoutingMethod]]]:
    """Each method's wire name, with its `has()` test in CEL and its model."""
    out: dict[str, tuple[str, type[RoutingMethod]]] = {}
    for name, info in TrafficRouting.model_fields.items():
        alias = info.alias or name
        model = next(a for a in info.annotation.__args__ if a is not type(None))  # type: ignore[union-attr]
        out[alias] = (f"has({where}.{alias})", model)
    return out


def _listed(names: list[str]) -> str:
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def _any_of(tests: list[str]) -> str:
    return "(" + " || ".join(tests) + ")" if tests else "false"


TrafficRouting.rules = (
    Rule(
        cel=" + ".join(f"({test} ? 1 : 0)" for test, _ in routing_methods().values()) + " == 1",
        message=f"trafficRouting needs exactly one of {_listed(list(routing_methods()))}",
        holds=lambda m: sum(x is not None for x in m.methods()) == 1,
    ),
)
_ROUTED = routing_methods("self.trafficRouting")
_MIRRORING = [alias for alias, (_, model) in _ROUTED.items() if model.can_mirror]
_NOT_MIRRORING = _any_of([test for test, model in _ROUTED.values() if not model.can_mirror])
_SERVICED = [alias for alias, (_, model) in _ROUTED.items() if model.needs_services]
_NEEDS_SERVICES = _any_of([test for test, model in _ROUTED.values() if model.needs_services])


class Stage(ApiModel):
    """One step of the rollout: a weight held for a while and judged."""

    weight: int = Field(
        ge=0,
        le=100,
        description="Percentage of traffic the candidate serves during this stage, 1 to 100. "
        "A mirror stage has weight 0.",
    )
    duration: Duration = Field(
        description="Minimum time the stage lasts before it may complete, for example 30s, "
        "10m or 1h."
    )
    min_samples: int | None = Field(
        None,
        ge=0,
        description="Candidate requests (from analysis.samplesQuery) the stage must see "
        "before it may complete.",
    )
    approval: Literal["Auto", "Manual"] = Field(
        "Auto",
        description="Manual waits, once the stage's checks pass, for the "
        "rollouts.mlops.io/action=promote annotation. Default: Auto.",
    )
    mirror: bool = Field(
        False,
        description="Mirror (shadow) the stable's traffic to the candidate at weight 0; the "
        "candidate's responses are discarded. Needs the gatewayAPI or istio router.",
    )
    match_rate: MatchRate | None = Field(
        None,
        description="Mirror stages only: judge how often the candidate answers like the stable, "
        "from the shadow comparator's counter (docs/shadow.md).",
    )

    rules = (
        Rule(
            cel="(has(self.mirror) && self.mirror) ? self.weight == 0 : self.weight >= 1",
            message="a mirror stage has weight 0; any other stage has a weight of 1 to 100",
            holds=lambda m: m.weight == 0 if m.mirror else m.weight >= 1,
            field_path=".weight",
        ),
        Rule(
            cel="!has(self.matchRate) || (has(self.mirror) && self.mirror)",
            message="matchRate needs a mirror stage: the comparator shadows the stable's traffic",
            holds=lambda m: m.match_rate is None or m.mirror,
            field_path=".matchRate",
        ),
    )


def _strictly_increasing(stages: list[Stage]) -> bool:
    weights = [s.weight for s in stages]
    traffic = [s.weight for s in stages if not s.mirror]
    return weights == sorted(weights) and len(set(traffic)) == len(traffic)


class Strategy(ApiModel):
    """The stages: a preset or your own list. Set exactly one."""

    preset: Preset | None = Field(
        None,
        description="A named stage sequence: 1-5-25-100 or 5-10-25-50-100 (weights in "
        "percent). Each stage lasts stageDuration and needs minSamples.",
    )
    stage_duration: Duration | None = Field(
        None, description="Duration of every preset stage. Default: 5m. Only with preset."
    )
    min_samples: int | None = Field(
        None,
        ge=0,
        description="Candidate requests each preset stage must see. Only with preset.",
    )
    stages: list[Stage] | None = Field(
        None,
        min_length=1,
        max_length=20,
        description="Custom stages. Weights increase strictly and the last is 100; mirror "
        "stages (weight 0) come first.",
    )

    rules = (
        Rule(
            cel="has(self.preset) != has(self.stages)",
            message="strategy needs exactly one of preset or stages",
            holds=lambda m: (m.preset is None) != (m.stages is None),
        ),
        Rule(
            cel="!has(self.stages) || self.stages[size(self.stages) - 1].weight == 100",
            message="the last stage must have weight 100",
            holds=lambda m: m.stages is None or m.stages[-1].weight == 100,
            field_path=".stages",
        ),
        Rule(
            cel="!has(self.stages) || (self.stages.map(s, s.weight).isSorted() && "
            "self.stages.all(s, (has(s.mirror) && s.mirror) || "
            "self.stages.exists_one(t, t.weight == s.weight)))",
            message="stage weights must increase strictly (mirror stages, at weight 0, come first)",
            holds=lambda m: m.stages is None or _strictly_increasing(m.stages),
            field_path=".stages",
        ),
        Rule(
            cel="!has(self.stages) || (!has(self.stageDuration) && !has(self.minSamples))",
            message="stageDuration and minSamples apply to a preset; with stages, set "
            "duration and minSamples on each stage",
            holds=lambda m: (
                m.stages is None or (m.stage_duration is None and m.min_samples is None)
            ),
        ),
    )

    def resolved_stages(self) -> list[Stage]:
        """The stage list the engine walks, presets expanded."""
        if self.stages is not None:
            return list(self.stages)
        assert self.preset is not None
        duration = self.stage_duration or "5m"
        return [
            Stage(weight=w, duration=duration, min_samples=self.min_samples)
            for w in PRESETS[self.preset]
        ]

    @property
    def needs_samples(self) -> bool:
        if self.stages is None:
            return bool(self.min_samples)
        return any(s.min_samples for s in self.stages)

    @property
    def has_mirror_stage(self) -> bool:
        return any(s.mirror for s in self.stages or [])

    @property
    def has_match_rate(self) -> bool:
        return any(s.match_rate for s in self.stages or [])


class Threshold(ApiModel):
    """Bounds a metric's value must stay within. Set min, max or both."""

    min: float | None = Field(None, description="Lowest acceptable value (inclusive).")
    max: float | None = Field(None, description="Highest acceptable value (inclusive).")

    rules = (
        Rule(
            cel="has(self.min) || has(self.max)",
            message="a threshold needs min, max or both",
            holds=lambda m: m.min is not None or m.max is not None,
        ),
        Rule(
            cel="!has(self.min) || !has(self.max) || self.min <= self.max",
            message="min must not exceed max",
            holds=lambda m: m.min is None or m.max is None or m.min <= m.max,
        ),
    )


class Compare(ApiModel):
    """Candidate against stable on the same query: a two-sample Mann-Whitney test with
    an effect size (the ratio of means), as Kayenta's judge does."""

    direction: Literal["increase", "decrease", "either"] = Field(
        description="Which change is harmful: increase (latency, errors), decrease "
        "(accuracy, throughput) or either."
    )
    tolerance: float = Field(
        0.1,
        ge=0,
        le=10,
        description="Allowed relative change of the candidate's mean against the stable's "
        "(0.1 allows 10%). Default: 0.1.",
    )
    confidence: float = Field(
        0.95,
        gt=0.5,
        lt=1,
        description="Confidence of the test; a difference counts only when p < 1 - "
        "confidence. Default: 0.95.",
    )
    min_points: int = Field(
        10,
        ge=3,
        le=10000,
        description="Points each side needs before a verdict; fewer holds the stage as "
        "inconclusive. Default: 10.",
    )
    step: Duration = Field(
        "30s", description="Resolution of the range queries, for example 30s. Default: 30s."
    )


DEFAULT_MATCH_SELECTOR = 'namespace="{{namespace}}",rollout="{{rollout}}"'
MATCH_COUNTER = "modelrollout_shadow_comparisons_total"


class MatchRate(ApiModel):
    """The share of shadowed requests on which the candidate answered like the stable:
    matches / (matches + mismatches + errors) over the stage, from the comparator's
    counter. Judged like a metric named match-rate."""

    slo: Threshold = Field(
        description="Bounds that must hold for the stage to complete, for example {min: 0.95}."
    )
    abort: Threshold | None = Field(
        None, description="Bounds whose single breach rolls back, for example {min: 0.90}."
    )
    min_samples: int = Field(
        100,
        ge=1,
        le=100_000_000,
        description="Comparisons needed before a verdict; fewer holds the stage. Default: 100.",
    )
    selector: Annotated[str, Field(min_length=1, max_length=1024)] = Field(
        DEFAULT_MATCH_SELECTOR,
        description="Label matchers picking this rollout's comparator series. Default: "
        + DEFAULT_MATCH_SELECTOR,
    )
    counter: MetricName = Field(
        MATCH_COUNTER, description=f"The comparator's counter. Default: {MATCH_COUNTER}."
    )

    rules = (
        Rule(
            cel="!has(self.abort) || ((!has(self.abort.min) || !has(self.slo.min) || "
            "self.abort.min <= self.slo.min) && (!has(self.abort.max) || !has(self.slo.max) || "
            "self.abort.max >= self.slo.max))",
            message="abort bounds must be no tighter than slo bounds "
            "(abort.max >= slo.max, abort.min <= slo.min)",
            holds=lambda m: _abort_no_tighter(m),
            field_path=".abort",
        ),
    )


def _abort_no_tighter(m: Metric | MatchRate) -> bool:
    if m.abort is None or m.slo is None:
        return True
    max_ok = m.abort.max is None or m.slo.max is None or m.abort.max >= m.slo.max
    min_ok = m.abort.min is None or m.slo.min is None or m.abort.min <= m.slo.min
    return max_ok and min_ok


class Metric(ApiModel):
    """A PromQL query judged every analysis interval."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$", max_length=63)] = Field(
        description="Unique name of the metric, used in status and Events."
    )
    query: PromQL = Field(
        description="PromQL returning exactly one sample; anything else is no data. "
        "Variables: {{namespace}}, {{stable.deployment}}, {{candidate.deployment}}, "
        "{{stable.service}}, {{candidate.service}}, {{stable.modelVersion}}, "
        "{{candidate.modelVersion}}, {{stage.weight}}, {{interval}}, {{window}} (time since "
        "the stage began, at least the interval), {{rollout}} (this rollout's name) and, for "
        "compare, {{target.deployment}}."
    )
    slo: Threshold | None = Field(
        None,
        description="Bounds that must hold for the stage to complete. failureLimit "
        "consecutive failures roll back.",
    )
    abort: Threshold | None = Field(
        None,
        description="Bounds whose single breach rolls back at once. No tighter than slo.",
    )
    compare: Compare | None = Field(
        None,
        description="Judge the candidate against the stable on this query instead of, or "
        "as well as, fixed bounds.",
    )

    rules = (
        Rule(
            cel="has(self.slo) || has(self.abort) || has(self.compare)",
            message="a metric needs slo, abort or compare",
            holds=lambda m: m.slo is not None or m.abort is not None or m.compare is not None,
        ),
        Rule(
            cel="!has(self.abort) || !has(self.slo) || "
            "((!has(self.abort.max) || !has(self.slo.max) || self.abort.max >= self.slo.max) && "
            "(!has(self.abort.min) || !has(self.slo.min) || self.abort.min <= self.slo.min))",
            message="abort bounds must be no tighter than slo bounds "
            "(abort.max >= slo.max, abort.min <= slo.min)",
            holds=_abort_no_tighter,
            field_path=".abort",
        ),
    )


class SecretKeyRef(ApiModel):
    """A key of a Secret in the rollout's namespace."""

    name: ObjectName = Field(description="Name of the Secret.")
    key: str = Field(max_length=253, description="Key within the Secret.")


class PrometheusConnection(ApiModel):
    """Where and how to query Prometheus (or Mimir, Cortex, Thanos)."""

    address: str = Field(
        pattern=r"^https?://[^\s]+$",
        max_length=2048,
        description="Base URL, for example http://prometheus.monitoring.svc:9090. The "
        "operator calls only addresses its allowlist admits (by default in-cluster Service "
        "names); a rollout naming another fails with AddressNotAllowed.",
    )
    headers: dict[str, Annotated[str, Field(max_length=1024)]] | None = Field(
        None,
        max_length=16,
        description="Extra HTTP headers, for example X-Scope-OrgID for Mimir or Cortex.",
    )
    bearer_token_secret_ref: SecretKeyRef | None = Field(
        None, description="Secret key holding a bearer token sent as Authorization."
    )
    ca_secret_ref: SecretKeyRef | None = Field(
        None, description="Secret key holding a PEM CA bundle to verify the server."
    )
    timeout: Duration = Field("10s", description="Query timeout. Default: 10s.")


class Analysis(ApiModel):
    """How the candidate is judged at each stage."""

    interval: Duration = Field(
        "30s", description="Time between analysis ticks, at least 5s. Default: 30s."
    )
    prometheus: PrometheusConnection = Field(description="The Prometheus to query.")
    samples_query: PromQL | None = Field(
        None,
        description="PromQL for the candidate's requests since the stage began (use "
        "{{window}}); needed when a stage sets minSamples.",
    )
    metrics: list[Metric] = Field(
        default_factory=list,
        max_length=20,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="Queries judged every interval, each against slo, abort or compare.",
    )
    failure_limit: int = Field(
        3,
        ge=1,
        le=100,
        description="Consecutive failed SLO checks in a stage that roll back. Default: 3.",
    )
    error_limit: int = Field(
        4,
        ge=1,
        le=1000,
        description="Consecutive ticks without data (Prometheus down or erroring, or no "
        "sample) before noDataPolicy applies. Default: 4.",
    )
    no_data_policy: Literal["Pause", "Rollback"] = Field(
        "Pause",
        description="What happens after errorLimit: Pause keeps holding the weight, "
        "Rollback rolls back. Default: Pause.",
    )

    rules = (
        Rule(
            cel=None,  # x-kubernetes-list-type: map already refuses duplicate names
            message="metric names must be unique",
            holds=lambda m: len({x.name for x in m.metrics}) == len(m.metrics),
        ),
        Rule(
            cel="!has(self.metrics) || !self.metrics.exists(m, m.name == 'match-rate')",
            message="match-rate is the name of a mirror stage's matchRate; name the metric "
            "otherwise",
            holds=lambda m: all(x.name != "match-rate" for x in m.metrics),
            field_path=".metrics",
        ),
        Rule(
            cel="!has(self.interval) || duration(self.interval) >= duration('5s')",
            message="interval must be at least 5s",
            holds=lambda m: parse_duration(m.interval).total_seconds() >= 5,
            field_path=".interval",
        ),
    )


class ConfigMapRef(ApiModel):
    """A ConfigMap holding a reference distribution built by `modelrollout reference build`."""

    name: ObjectName = Field(description="Name of the ConfigMap in this namespace.")
    key: str = Field(
        "reference.yaml",
        max_length=253,
        description="Key holding the reference. Default: reference.yaml.",
    )


class StableReference(ApiModel):
    """Compare with the stable model's live distribution over the same window."""


class DriftReference(ApiModel):
    """What the candidate's distribution is compared with. Set exactly one."""

    stable: StableReference | None = Field(
        None, description="The stable model's live traffic in the same window (side by side)."
    )
    config_map_ref: ConfigMapRef | None = Field(
        None, description="A training distribution with bin edges and proportions."
    )

    rules = (
        Rule(
            cel="has(self.stable) != has(self.configMapRef)",
            message="reference needs exactly one of stable or configMapRef",
            holds=lambda m: (m.stable is None) != (m.config_map_ref is None),
        ),
    )


def _warn_at_most_max(m: DriftGate) -> bool:
    return m.warn <= m.max


LabelName = Annotated[str, Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", max_length=200)]
FeatureName = Annotated[str, Field(min_length=1, max_length=200)]
DEFAULT_DRIFT_SELECTOR = 'namespace="{{namespace}}",deployment="{{target.deployment}}"'


class CategoricalFeatures(ApiModel):
    """Categorical features, from a counter labelled with the feature and the category."""

    counter: MetricName = Field(
        description="Counter with a feature label and a category label, for example "
        "model_feature_category_total."
    )
    features: list[FeatureName] = Field(
        min_length=1,
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Values of the feature label to check.",
    )
    category_label: LabelName = Field(
        "category", description="The label holding the category. Default: category."
    )


class DriftGate(ApiModel):
    """Population stability index (PSI) of the candidate's inputs, and optionally its
    scores, against a reference; gated only when beyond chance at this sample size."""

    histogram: MetricName = Field(
        description="Classic histogram with a feature label, for example model_feature_value; "
        "its _bucket series are read."
    )
    features: list[FeatureName] = Field(
        min_length=1,
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Values of the feature label to check.",
    )
    categorical: CategoricalFeatures | None = Field(
        None, description="Categorical features, checked like the numeric ones."
    )
    score_histogram: MetricName | None = Field(
        None, description="Classic histogram of prediction scores, checked like a feature."
    )
    selector: Annotated[str, Field(min_length=1, max_length=1024)] = Field(
        DEFAULT_DRIFT_SELECTOR,
        description="Label matchers picking one side's series; {{target.deployment}} is "
        "the candidate's Deployment, or the stable's for the stable reference. Default: "
        + DEFAULT_DRIFT_SELECTOR,
    )
    reference: DriftReference = Field(description="What to compare with.")
    warn: float = Field(
        0.1, ge=0, le=10, description="PSI that raises a warning condition. Default: 0.1."
    )
    max: float = Field(
        0.25, gt=0, le=10, description="PSI beyond which the gate fails. Default: 0.25."
    )
    aggregate: Literal["mean", "max"] = Field(
        "mean", description="How per-feature PSI combines: mean or max. Default: mean."
    )
    feature_max: float = Field(
        0.5,
        gt=0,
        le=10,
        description="PSI of any single feature (or of the scores) beyond which the gate fails "
        "whatever the aggregate, since a mean dilutes one feature far out among many. 0.5 is "
        "about a 0.7-sigma shift of one feature over decile bins; one sigma gives about 0.93. "
        "Default: 0.5.",
    )
    enforce: bool = Field(
        True,
        description="true rolls back on drift beyond max; false only records and warns "
        "(observe-only). Default: true.",
    )
    min_samples: int = Field(
        200,
        ge=1,
        description="Candidate observations needed before a verdict; fewer holds the stage "
        "as inconclusive. Default: 200.",
    )
    confidence: float = Field(
        0.99,
        gt=0.5,
        lt=1,
        description="Drift counts only when PSI also exceeds its no-drift critical value at "
        "this confidence. Default: 0.99.",
    )

    rules = (
        Rule(
            cel=None,  # x-kubernetes-list-type: set already refuses duplicates
            message="features must be unique",
            holds=lambda m: len(set(m.features)) == len(m.features),
        ),
        Rule(
            cel="!has(self.categorical) || "
            "!self.categorical.features.exists(f, f in self.features)",
            message="a feature cannot be both numeric and categorical",
            holds=lambda m: (
                m.categorical is None or not set(m.categorical.features) & set(m.features)
            ),
            field_path=".categorical.features",
        ),
        Rule(
            cel="(has(self.warn) ? self.warn : 0.1) <= (has(self.max) ? self.max : 0.25)",
            message="warn must not exceed max",
            holds=_warn_at_most_max,
            field_path=".warn",
        ),
    )


CheckName = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=40)]


class JobSpec(ApiModel):
    """A batch/v1 JobSpec, kept whole: only its pod template is required here."""

    model_config = ConfigDict(
        extra="allow", json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    template: dict[str, Any] = Field(
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        description="The pod template (metadata and spec) the evaluation runs in.",
    )


class Kpi(ApiModel):
    """A value the evaluation Job reports, judged against bounds."""

    name: Annotated[str, Field(min_length=1, max_length=63)] = Field(
        description="Key in the JSON object the Job writes to its termination message."
    )
    min: float | None = Field(None, description="Lowest acceptable value (inclusive).")
    max: float | None = Field(None, description="Highest acceptable value (inclusive).")

    rules = (
        Rule(
            cel="has(self.min) || has(self.max)",
            message="a KPI needs min, max or both",
            holds=lambda m: m.min is not None or m.max is not None,
        ),
    )


class JobCheck(ApiModel):
    """An evaluation or backtest Job: the check passes when the Job succeeds and every
    KPI it reports is within bounds."""

    template: JobSpec = Field(
        description="A batch/v1 JobSpec (template, backoffLimit, ...). The operator creates "
        "the Job in the rollout's namespace, owned by the rollout, with "
        "ttlSecondsAfterFinished 3600 unless set."
    )
    kpis: list[Kpi] = Field(
        default_factory=list,
        max_length=20,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="KPIs read from the JSON object the Job's container writes to its "
        "termination message (/dev/termination-log); a missing or non-numeric KPI fails.",
    )


class WebhookCheck(ApiModel):
    """An HTTP POST of the rollout's context; a 2xx answer passes."""

    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$", max_length=2048)] | None = Field(
        None, description="Where to POST. Must be admitted by the operator's allowlist."
    )
    url_secret_ref: SecretKeyRef | None = Field(
        None, description="A Secret key holding the URL, when it carries a token."
    )
    timeout: Duration = Field("10s", description="Timeout of one call. Default: 10s.")

    rules = (
        Rule(
            cel="has(self.url) != has(self.urlSecretRef)",
            message="a webhook needs exactly one of url or urlSecretRef",
            holds=lambda m: (m.url is None) != (m.url_secret_ref is None),
        ),
    )


class Check(ApiModel):
    """One gate: a Job or a webhook that must pass."""

    name: CheckName = Field(description="Unique name of the check, used in status and Events.")
    job: JobCheck | None = Field(None, description="Run an evaluation Job.")
    webhook: WebhookCheck | None = Field(None, description="Call a webhook.")
    timeout: Duration = Field(
        "15m", description="How long one attempt may take before it fails. Default: 15m."
    )
    retries: int = Field(
        0, ge=0, le=10, description="Attempts after a failed one before the gate fails. Default: 0."
    )

    rules = (
        Rule(
            cel="has(self.job) != has(self.webhook)",
            message="a check needs exactly one of job or webhook",
            holds=lambda m: (m.job is None) != (m.webhook is None),
        ),
    )


CheckList = Annotated[
    list[Check],
    Field(
        max_length=10,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    ),
]


class Checks(ApiModel):
    """Gates before the first traffic, before the last stage, and after promotion."""

    pre_rollout: CheckList = Field(
        default_factory=list, description="Before any traffic moves; a failure fails the rollout."
    )
    pre_promotion: CheckList = Field(
        default_factory=list,
        description="Before the last stage (full promotion); a failure rolls back.",
    )
    post_promotion: CheckList = Field(
        default_factory=list,
        description="After the last stage, before Succeeded; a failure is reported "
        "(postPromotionFailure: Report) or rolls back (Rollback).",
    )
    post_promotion_failure: Literal["Report", "Rollback"] = Field(
        "Report", description="What a failed postPromotion check does. Default: Report."
    )


NotificationEvent = Literal[
    "Started", "StageAdvanced", "AwaitingApproval", "Paused", "RolledBack", "Succeeded", "Failed"
]
ReceiverType = Literal["webhook", "slack", "cloudevents"]


class NotificationReceiver(ApiModel):
    """Where this rollout's transitions are sent, besides the operator's own receivers."""

    name: CheckName = Field(description="Unique name of the receiver, shown in status.")
    type: ReceiverType = Field(
        description="webhook (the notification as JSON), slack (an incoming webhook) or "
        "cloudevents (CloudEvents 1.0, structured mode)."
    )
    url_secret_ref: SecretKeyRef = Field(
        description="A Secret key holding the URL (it often carries a token). The URL must be "
        "admitted by the operator's allowlist."
    )
    events: list[NotificationEvent] | None = Field(
        None,
        max_length=7,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Only these events (Started, StageAdvanced, AwaitingApproval, Paused, "
        "RolledBack, Succeeded, Failed). Default: every event.",
    )


def _mirror_needs_router(m: ModelRolloutSpec) -> bool:
    return m.traffic_routing.can_mirror or not m.strategy.has_mirror_stage


def _services_when_routed(m: ModelRolloutSpec) -> bool:
    if not m.traffic_routing.method.needs_services:
        return True
    return m.stable.service is not None and m.candidate.service is not None


def _dry_run_can_see_the_candidate(m: ModelRolloutSpec) -> bool:
    judged = m.analysis is not None or m.drift_gate is not None
    return not (m.dry_run and judged and not m.traffic_routing.can_mirror)


def _samples_query_when_needed(m: ModelRolloutSpec) -> bool:
    if not m.strategy.needs_samples:
        return True
    return m.analysis is not None and m.analysis.samples_query is not None


_NEEDS_SAMPLES_CEL = (
    "(has(self.strategy.minSamples) && self.strategy.minSamples > 0) || "
    "(has(self.strategy.stages) && "
    "self.strategy.stages.exists(s, has(s.minSamples) && s.minSamples > 0))"
)


class ModelRolloutSpec(ApiModel):
    """How the candidate model takes traffic from the stable one."""

    stable: StableRef = Field(description="The Deployment serving the current model.")
    candidate: CandidateRef = Field(description="The Deployment serving the new model.")
    traffic_routing: TrafficRouting = Field(description="How weights reach the data plane.")
    strategy: Strategy = Field(description="The stages the candidate walks to 100%.")
    analysis: Analysis | None = Field(
        None,
        description="Prometheus checks at each stage. Without it, stages pass on time alone.",
    )
    drift_gate: DriftGate | None = Field(
        None, description="PSI drift gate on input features and scores."
    )
    checks: Checks | None = Field(
        None,
        description="Evaluation Jobs and webhooks that gate the rollout before any traffic, "
        "before the last stage and after it.",
    )
    notifications: list[NotificationReceiver] = Field(
        default_factory=list,
        max_length=10,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="Receivers told of every transition: started, stage advanced, waiting for "
        "approval, paused, rolled back, succeeded, failed (docs/notifications.md).",
    )
    dry_run: bool = Field(
        False,
        description="Walk every stage and judge it, but serve the candidate nothing: the "
        "router mirrors each stage's share of the stable's traffic to the candidate (answers "
        "discarded), so its metrics are real. Needs a router that can mirror when analysis or "
        "driftGate is set. Default: false.",
    )
    paused: bool = Field(
        False, description="Hold the rollout at its current weight. Default: false."
    )

    rules = (
        Rule(
            cel="self.stable.deployment != self.candidate.deployment",
            message="stable and candidate must be different Deployments",
            holds=lambda m: m.stable.deployment != m.candidate.deployment,
            field_path=".candidate.deployment",
        ),
        Rule(
            cel=f"!{_NEEDS_SERVICES} || (has(self.stable.service) && has(self.candidate.service))",
            message=f"{' and '.join(_SERVICED)} routing need stable.service and candidate.service",
            holds=_services_when_routed,
        ),
        Rule(
            cel="!has(self.stable.service) || !has(self.candidate.service) || "
            "self.stable.service != self.candidate.service",
            message="stable and candidate must use different Services",
            holds=lambda m: m.stable.service is None or m.stable.service != m.candidate.service,
            field_path=".candidate.service",
        ),
        Rule(
            cel=f"!{_NOT_MIRRORING} || !has(self.strategy.stages) || "
            "!self.strategy.stages.exists(s, has(s.mirror) && s.mirror)",
            message=f"mirror stages need a router that can mirror ({_listed(_MIRRORING)})",
            holds=_mirror_needs_router,
            field_path=".strategy.stages",
        ),
        Rule(
            cel=f"!has(self.dryRun) || !self.dryRun || !{_NOT_MIRRORING} || "
            "(!has(self.analysis) && !has(self.driftGate))",
            message="a dry run evaluates the candidate on mirrored traffic, which needs a router "
            f"that can mirror ({_listed(_MIRRORING)}); with this router the candidate gets no "
            "traffic in a dry run, so its analysis and drift gate could never be judged",
            holds=_dry_run_can_see_the_candidate,
            field_path=".dryRun",
        ),
        Rule(
            cel=f"!({_NEEDS_SAMPLES_CEL}) || (has(self.analysis) && "
            "has(self.analysis.samplesQuery))",
            message="minSamples needs analysis.samplesQuery to count the candidate's requests",
            holds=_samples_query_when_needed,
        ),
        Rule(
            cel="!has(self.strategy.stages) || !self.strategy.stages.exists(s, has(s.matchRate)) "
            "|| has(self.analysis)",
            message="matchRate reads the comparator's counter through analysis.prometheus: "
            "set analysis",
            holds=lambda m: m.analysis is not None or not m.strategy.has_match_rate,
        ),
        Rule(
            cel="!has(self.driftGate) || has(self.analysis)",
            message="driftGate reads its histograms through analysis.prometheus: set analysis",
            holds=lambda m: m.drift_gate is None or m.analysis is not None,
        ),
    )
