"""`python -m bench.census [operator arguments]`: the operator, which on SIGUSR2 writes
a census of its live Python objects to $MODELROLLOUT_CENSUS, for `bench.scale
--census`. Part of the harness only; the operator never ships it.

The census holds the GIL while it walks every object, so it is taken after the
measurement window. It reports two views:
- by type: count and bytes of every object the garbage collector tracks, with the
  strings and numbers each container holds directly (those are not tracked);
- by owner: the bytes reachable from the instances of each class of the operator
  and of kopf without passing through another such instance, each object counted
  once, for the first owner that reaches it.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
from collections import Counter
from types import FrameType, ModuleType
from typing import Any

TOP = 40
OWNERS = ("modelrollout.", "kopf.")


def _name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def _size(thing: Any) -> int:
    size = sys.getsizeof(thing)
    if isinstance(thing, dict):
        items: Any = (*thing.keys(), *thing.values())
    elif isinstance(thing, list | tuple | set | frozenset):
        items = thing
    else:
        return size
    return size + sum(sys.getsizeof(i) for i in items if not gc.is_tracked(i))


def by_type(objects: list[Any]) -> list[tuple[str, int, int]]:
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for thing in objects:
        name = _name(type(thing))
        counts[name] += 1
        sizes[name] += _size(thing)
    return [(name, counts[name], size) for name, size in sizes.most_common(TOP)]


def by_owner(objects: list[Any]) -> list[tuple[str, int, int]]:
    owners: dict[str, list[Any]] = {}
    for thing in objects:
        name = _name(type(thing))
        if name.startswith(OWNERS) and not isinstance(thing, type | ModuleType):
            owners.setdefault(name, []).append(thing)
    bounds = {id(i) for instances in owners.values() for i in instances}
    seen: set[int] = {id(objects)}
    for module in list(sys.modules.values()):  # modules (and functions' globals) reach all
        seen.update((id(module), id(getattr(module, "__dict__", None))))
    rows = []
    for name, instances in owners.items():
        total, stack = 0, list(instances)
        while stack:
            thing = stack.pop()
            if id(thing) in seen or isinstance(thing, type | ModuleType):
                continue
            seen.add(id(thing))
            total += sys.getsizeof(thing)
            # another owner's instance is counted for its own class
            stack.extend(r for r in gc.get_referents(thing) if id(r) not in bounds)
        rows.append((name, len(instances), total))
    return sorted(rows, key=lambda r: -r[2])[:TOP]


def take(path: str) -> None:
    gc.collect()
    objects = gc.get_objects()
    report = {"by_type": by_type(objects), "by_owner": by_owner(objects)}
    del objects
    with open(path + ".tmp", "w") as out:
        json.dump(report, out, indent=1)
    os.replace(path + ".tmp", path)


def main() -> int:
    path = os.environ["MODELROLLOUT_CENSUS"]

    def on_signal(_: int, __: FrameType | None) -> None:
        take(path)

    signal.signal(signal.SIGUSR2, on_signal)
    from modelrollout.__main__ import main as operator_main

    return operator_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
