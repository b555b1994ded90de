"""The shadow comparator: answers from the stable model, compares the candidate's answers.

Mirroring (Gateway API RequestMirror, Istio mirror) throws the candidate's answers
away. This service sits in front of the stable instead: every client gets the
stable's answer, a share of requests is also sent to the candidate in the
background, and each pair of answers is compared on chosen JSON paths and counted
in Prometheus, where the rollout's match-rate gate reads it. See docs/shadow.md.

  settings.py   flags and MODELROLLOUT_SHADOW_* variables
  compare.py    pure: JSONPath rules, tolerances, the verdict
  proxy.py      the request path to the stable
  shadowing.py  the copies to the candidate: share, bounds, timeout, counting
  follow.py     --follow-rollout: shadow only while the ModelRollout mirrors
  metrics.py    the Prometheus series
  main.py       the process
"""

try:
    import aiohttp  # noqa: F401
    import jsonpath  # noqa: F401
except ImportError as error:  # installed without the extra
    raise ImportError(
        f"the shadow comparator needs the 'shadow' extra: pip install 'modelrollout[shadow]' "
        f"({error})"
    ) from error
