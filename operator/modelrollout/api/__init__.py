"""The ModelRollout API (rollouts.mlops.io/v1alpha1): the single source of truth.

`make generate` turns these models into the CRD in crds/ and in the chart.
"""

from modelrollout.api.resource import GROUP, KIND, PLURAL, VERSION, ModelRollout
from modelrollout.api.spec import ModelRolloutSpec
from modelrollout.api.status import ModelRolloutStatus

__all__ = [
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "ModelRollout",
    "ModelRolloutSpec",
    "ModelRolloutStatus",
]
