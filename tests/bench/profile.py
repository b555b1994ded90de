"""`python -m bench.profile FILE`: where a py-spy `--format raw` profile spent its time.

Each line of the file is a stack (`frame;frame;...`, outermost first) and a sample
count. Prints the share of samples per library (by the file path of the innermost
frame), the top functions by self time, and the top functions of our package by
inclusive time (a function counted once per stack even if it recurses).
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")
LIBRARIES = (
    ("modelrollout", "/modelrollout/"),
    ("kopf", "/kopf/"),
    ("kubernetes client", "/kubernetes/"),
    ("urllib3", "/urllib3/"),
    ("pydantic", "/pydantic"),
    ("aiohttp", "/aiohttp/"),
    ("json/yaml", "/json/"),
    ("asyncio", "/asyncio/"),
    ("ssl/socket", "/ssl.py"),
    ("socket/http", "/socket.py"),
    ("selectors (idle wait)", "/selectors.py"),
    ("thread pool", "/concurrent/"),
    ("http.client", "/http/"),
    ("numpy", "/numpy/"),
    ("threading", "/threading.py"),
)


def _library(file: str) -> str:
    for name, marker in LIBRARIES:
        if marker in "/" + file:
            return name
    return "other"


def summarise(path: Path, top: int = 15) -> str:
    total = 0
    libraries: Counter[str] = Counter()
    own: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        leaf = _FRAME.match(frames[-1])
        leaf_file = leaf.group("file") if leaf else frames[-1]
        libraries[_library(leaf_file)] += count
        own[frames[-1]] += count
        seen = set()
        for frame in frames:
            match = _FRAME.match(frame)
            if match and "/modelrollout/" in "/" + match.group("file") and frame not in seen:
                seen.add(frame)
                ours[frame] += count
    if not total:
        return f"{path}: no samples"
    out = [f"{total} samples"]
    out.append("by library (innermost frame):")
    out += [f"  {100 * c / total:5.1f}%  {name}" for name, c in libraries.most_common()]
    out.append(f"top {top} by self time:")
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(top)]
    out.append(f"top {top} of modelrollout by inclusive time:")
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in ours.most_common(top)]
    return "\n".join(out)


if __name__ == "__main__":
    print(summarise(Path(sys.argv[1])))
