"""A sweep's grid as people write it (TOML or YAML), and the points it expands to.

    modes = ["hgm", "hugepage"]        # every point runs each mode, as `migrator experiment`
    repetitions = 2
    [grid]                             # every combination of these lists is one point
    link = ["200mbit/2ms", "unshaped", "loopback"]   # BANDWIDTH/RTT[/LOSS] on two hosts;
                                       # "unshaped": two hosts, no shaping; "loopback": one host
    memory = ["128MiB", "256MiB"]
    hugepage_size = ["2M"]
    vcpus = [4]
    pattern = ["zipf", "uniform", "trace:guest-trace.json"]
    accesses = [2000]
    background_cap = ["0", "50MiB"]    # bytes per second, 0: no cap
    background_window = [2]

Instead of `link`, `bandwidth`, `rtt` and `loss` lists are crossed like the other keys. A key
left out takes `migrator experiment`'s default. The points are numbered in a fixed order (the
order of the keys above, the last one varying fastest), so point N is the same point on every
machine: a cluster job runs `migrator sweep SPEC --index N`.
"""

from __future__ import annotations

import itertools
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..dest.backing import MODES
from ..errors import MigratorError
from ..guest.patterns import PATTERNS
from ..units import parse_size

# grid keys in point order, each with its default (what `migrator experiment` takes)
AXES: dict[str, object] = {
    "link": "loopback", "memory": "2GiB", "hugepage_size": "1G", "vcpus": 4,
    "pattern": "zipf", "accesses": 5000, "background_cap": "0", "background_window": 2,
}
LINK_AXES = ("bandwidth", "rtt", "loss")
TOP_KEYS = {"modes", "repetitions", "seed", "write_ratio", "grid", "name"}


@dataclass(frozen=True)
class Point:
    index: int
    values: dict  # axis -> value as written in the spec

    @property
    def slug(self) -> str:
        parts = [f"{k}={v}" for k, v in self.values.items()]
        return f"{self.index:03d}-" + re.sub(r"[^A-Za-z0-9=._-]+", "_", "-".join(parts))[:120]


@dataclass(frozen=True)
class Spec:
    name: str
    modes: list[str]
    repetitions: int
    seed: int
    write_ratio: float
    axes: dict[str, list]  # every axis, defaults filled in, in point order

    @property
    def swept(self) -> list[str]:
        """The axes with more than one value: what the plots are drawn against."""
        return [k for k, v in self.axes.items() if len(v) > 1]

    def points(self) -> list[Point]:
        keys = list(self.axes)
        return [Point(i, dict(zip(keys, combo)))
                for i, combo in enumerate(itertools.product(*self.axes.values()))]

    def as_dict(self) -> dict:
        return {"name": self.name, "modes": self.modes, "repetitions": self.repetitions,
                "seed": self.seed, "write_ratio": self.write_ratio, "axes": self.axes}


def _as_list(key: str, value) -> list:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise MigratorError(f"grid.{key} is empty: give at least one value")
    return values


def _check_value(key: str, value) -> None:
    try:
        if key in ("memory", "hugepage_size", "background_cap"):
            n = parse_size(str(value))
            if key == "memory" and (n <= 0 or n % (2 << 20)):
                raise ValueError(f"{value}: a positive multiple of 2 MiB")
            if key == "hugepage_size" and n not in (2 << 20, 1 << 30):
                raise ValueError(f"{value}: a huge page is 2M or 1G")
        elif key in ("vcpus", "accesses", "background_window"):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{value!r}: a whole number, at least 1")
        elif key == "pattern":
            if not (value in PATTERNS or str(value).startswith("trace:")):
                raise ValueError(f"{value!r}: one of {', '.join(PATTERNS)}, or trace:FILE")
        elif key == "link":
            link_spec(str(value))
    except ValueError as e:
        raise MigratorError(f"grid.{key}: {e}") from None


def link_spec(text: str):
    """'loopback' -> None (one host); 'unshaped' or 'BW/RTT[/LOSS]' -> a LinkSpec."""
    from ..netns.spec import LinkSpec

    if text == "loopback":
        return None
    if text == "unshaped":
        return LinkSpec()
    parts = text.split("/")
    if len(parts) not in (2, 3):
        raise ValueError(f"{text!r}: write BANDWIDTH/RTT[/LOSS] (e.g. 200mbit/2ms, 0/100us for "
                         f"no bandwidth limit), 'unshaped' or 'loopback'")
    return LinkSpec.parse(*parts, *([None] * (3 - len(parts))))


def _read(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as e:
        raise MigratorError(f"cannot read sweep spec {path}: {e}") from None
    try:
        if path.suffix == ".toml":
            return tomllib.loads(text)
        if path.suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text) or {}
        if path.suffix == ".json":
            return json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise MigratorError(f"{path}: not valid {path.suffix[1:].upper()}: {e}") from None
    except Exception as e:  # yaml.YAMLError, without importing yaml at module load
        raise MigratorError(f"{path}: not valid YAML: {e}") from None
    raise MigratorError(f"{path}: a sweep spec is .toml, .yaml or .json")


def parse(body: dict, name: str = "sweep") -> Spec:
    if not isinstance(body, dict):
        raise MigratorError("a sweep spec is a table (mapping) with a [grid]")
    unknown = set(body) - TOP_KEYS
    if unknown:
        raise MigratorError(f"unknown key(s) {', '.join(sorted(unknown))}: use "
                            f"{', '.join(sorted(TOP_KEYS))}")
    grid = dict(body.get("grid") or {})
    unknown = set(grid) - set(AXES) - set(LINK_AXES)
    if unknown:
        raise MigratorError(f"unknown grid key(s) {', '.join(sorted(unknown))}: use "
                            f"{', '.join([*AXES, *LINK_AXES])}")
    crossed = {k: _as_list(k, grid.pop(k)) for k in LINK_AXES if k in grid}
    if crossed:
        if "link" in grid:
            raise MigratorError("grid: give either link, or bandwidth/rtt/loss, not both")
        grid["link"] = ["/".join(str(v) for v in combo) for combo in itertools.product(
            crossed.get("bandwidth", ["0"]), crossed.get("rtt", ["0"]), crossed.get("loss", ["0"]))]
    axes = {k: _as_list(k, grid.get(k, default)) for k, default in AXES.items()}
    for key, values in axes.items():
        for v in values:
            _check_value(key, v)
    modes = _as_list("modes", body.get("modes", ["hgm", "hugepage"]))
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise MigratorError(f"modes: {bad}: use some of {', '.join(MODES)}")
    reps = body.get("repetitions", 1)
    if not isinstance(reps, int) or reps < 1:
        raise MigratorError(f"repetitions: {reps!r}: a whole number, at least 1")
    return Spec(str(body.get("name", name)), list(modes), reps, int(body.get("seed", 42)),
                float(body.get("write_ratio", 0.2)), axes)


def load(path: str | Path) -> Spec:
    path = Path(path)
    return parse(_read(path), name=path.stem)
