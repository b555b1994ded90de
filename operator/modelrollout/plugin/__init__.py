"""`kubectl modelrollout`: read, drive and lint ModelRollouts from a terminal.

Only reads the API and writes the action annotation, so it can never do what the
operator would not: every transition is still the operator's. Its libraries come with
the `plugin` extra, which the operator's own install leaves out.
"""

from importlib.util import find_spec

_missing = [name for name in ("rich", "matplotlib") if find_spec(name) is None]
if _missing:
    raise SystemExit(
        f"kubectl-modelrollout needs {' and '.join(_missing)}: pip install 'modelrollout[plugin]'"
    )
