"""`python -m chaos --n 100 --seed S --profile soak` (PYTHONPATH=tests): run the soak,
print its counts, and exit 1 with the seed, the replay command and the schedule when
an invariant broke."""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from pathlib import Path

from chaos import invariants
from chaos.bed import open_bed
from chaos.plan import PROFILES, make_plan
from chaos.soak import Soak, report
from testbed import MissingPrerequisite, procs
from testbed.paths import CACHE


def main() -> int:
    parser = argparse.ArgumentParser(prog="make chaos", description=__doc__)
    parser.add_argument("--n", type=int, default=100, help="rollouts (default 100)")
    parser.add_argument("--seed", type=int, help="replay this seed (default: a new one)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="soak")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    plan = make_plan(seed, args.n, PROFILES[args.profile])
    print(f"chaos soak: seed {seed}, replay with: {plan.replay()}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="chaos-"))
    out = CACHE / "chaos" / f"seed-{seed}-n{args.n}-{args.profile}"
    out.parent.mkdir(parents=True, exist_ok=True)
    archive = out.with_suffix(".history.jsonl.gz")
    try:
        with open_bed(workdir, procs.spawn) as bed:
            evidence = Soak(plan, bed, log=print, archive=archive).run()
    except MissingPrerequisite as error:
        print(f"chaos: prerequisite missing: {error}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    violations = invariants.check(evidence)
    text = report(evidence, violations)
    print(text)
    out.with_suffix(".txt").write_text(text + "\n")
    print(f"report: {out.with_suffix('.txt')}; every stored version: {archive}")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
