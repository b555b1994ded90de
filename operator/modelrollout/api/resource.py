"""The ModelRollout resource as a whole, and its names in the API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from modelrollout.api.base import ApiModel
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import ModelRolloutStatus

GROUP = "rollouts.mlops.io"
VERSION = "v1alpha1"
KIND = "ModelRollout"
PLURAL = "modelrollouts"
SINGULAR = "modelrollout"
SHORT_NAMES = ("mro",)
CATEGORIES = ("ml",)
FIELD_MANAGER = "modelrollout-operator"
ACTION_ANNOTATION = f"{GROUP}/action"
FINALIZER = f"{GROUP}/finalizer"


class ModelRollout(ApiModel):
    """Rolls a candidate model-serving Deployment out stage by stage, judged by SLOs,
    a comparison with the stable model and a PSI drift gate; rolls back on a breach."""

    api_version: Literal["rollouts.mlops.io/v1alpha1"] = Field(
        "rollouts.mlops.io/v1alpha1", description="rollouts.mlops.io/v1alpha1"
    )
    kind: Literal["ModelRollout"] = Field("ModelRollout", description="ModelRollout")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard metadata.")
    spec: ModelRolloutSpec = Field(description="What to roll out, and how.")
    status: ModelRolloutStatus | None = Field(
        None, description="Where the rollout is, written by the operator."
    )
