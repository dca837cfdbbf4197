"""Experiment definitions: arms with weights and a traffic fraction, validated loudly."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)

WEIGHT_TOLERANCE = 1e-6  # weights must sum to 1 within this (0.1 + 0.2 + 0.7 is not exactly 1.0)
METRICS = ("ctr", "conversion", "revenue_per_user", "click_through", "ctr_per_user")
# A guardrail passes when the treatment is shown to be no worse than this relative loss (-2 %), one-sided at alpha.
DEFAULT_GUARDRAIL_MARGIN = 0.02


@dataclass(frozen=True)
class Guardrail:
    """A metric that must not get worse: non-inferiority of the relative lift against `-margin`."""

    metric: str
    margin: float = DEFAULT_GUARDRAIL_MARGIN

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"unknown guardrail metric {self.metric!r}; known: {', '.join(METRICS)}")
        m = self.margin
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not (math.isfinite(m) and 0.0 < m < 1.0):
            raise ValueError(f"guardrail {self.metric!r}: margin must be a relative loss in (0, 1), got {m!r}")

    def to_dict(self) -> dict[str, Any]:
        """The stored JSON form: {"metric", "margin"}."""
        return {"metric": self.metric, "margin": self.margin}


def parse_guardrails(raw: Iterable[Any] | None, strict: bool = True) -> tuple[Guardrail, ...]:
    """Guardrails from their stored or typed form: metric names or {"metric", "margin"} objects.

    Strict (creation): ValueError names the first unknown metric, bad margin or duplicate. Not strict (reading
    rows stored before guardrails were validated): invalid entries are logged and skipped, so serving goes on.
    """
    out: list[Guardrail] = []
    for item in raw or ():
        try:
            if isinstance(item, str):
                g = Guardrail(item.strip())
            elif isinstance(item, Mapping) and "metric" in item:
                g = Guardrail(str(item["metric"]), item.get("margin", DEFAULT_GUARDRAIL_MARGIN))
            else:
                raise ValueError(f"a guardrail is a metric name or an object with 'metric' and 'margin', got {item!r}")
            if any(o.metric == g.metric for o in out):
                raise ValueError(f"guardrail {g.metric!r} is listed twice")
        except ValueError:
            if strict:
                raise
            log.warning("ignoring an invalid stored guardrail %r", item)
            continue
        out.append(g)
    return tuple(out)


@dataclass(frozen=True)
class Arm:
    """One arm and its share of the experiment's traffic."""

    name: str
    weight: float


@dataclass(frozen=True)
class ExperimentDefinition:
    """What assignment and analysis need to know about one experiment.

    Invalid definitions raise ValueError with a precise message at construction, so a bad
    experiment can never start assigning users.
    """

    key: str
    arms: tuple[Arm, ...]
    salt: str = ""
    traffic_fraction: float = 1.0
    hash_version: int = 1
    primary_metric: str = "ctr"
    started_at: datetime | None = None
    stopped_at: datetime | None = None
    guardrails: tuple[Guardrail, ...] = ()

    def __post_init__(self) -> None:
        validate_arms(self.arms)
        tf = self.traffic_fraction
        if not (isinstance(tf, (int, float)) and math.isfinite(tf) and 0.0 < tf <= 1.0):
            raise ValueError(f"experiment {self.key!r}: traffic_fraction must be in (0, 1], got {tf!r}")
        from experiments.assignment import HASHES  # assignment imports this module

        if self.hash_version not in HASHES:
            raise ValueError(
                f"experiment {self.key!r}: unknown hash_version {self.hash_version!r}; known: {sorted(HASHES)}"
            )
        if self.primary_metric not in METRICS:
            raise ValueError(
                f"experiment {self.key!r}: primary_metric {self.primary_metric!r} is not one of {', '.join(METRICS)}"
            )
        if any(not isinstance(g, Guardrail) for g in self.guardrails):
            raise ValueError(f"experiment {self.key!r}: guardrails must be Guardrail objects (see parse_guardrails)")

    @property
    def seed(self) -> str:
        """The hash seed: the salt, or the key when no salt is set (as GrowthBook's hashAttribute seed)."""
        return self.salt or self.key

    @property
    def arm_names(self) -> tuple[str, ...]:
        """Arm names in configured order; the first arm is the control."""
        return tuple(a.name for a in self.arms)

    @property
    def weights(self) -> tuple[float, ...]:
        """Arm weights in configured order."""
        return tuple(a.weight for a in self.arms)

    @property
    def control(self) -> str:
        """The control arm (the first one)."""
        return self.arms[0].name

    @classmethod
    def from_row(cls, key: str, arms: Iterable[Mapping[str, Any]], **kwargs: Any) -> ExperimentDefinition:
        """Build from the JSON arms of the `experiments` table: [{"name", "weight"}, ...]."""
        parsed = []
        for i, a in enumerate(arms):
            if not isinstance(a, Mapping) or "name" not in a or "weight" not in a:
                raise ValueError(f"experiment {key!r}: arm #{i} must be an object with 'name' and 'weight', got {a!r}")
            parsed.append(Arm(str(a["name"]), a["weight"]))
        return cls(key=key, arms=tuple(parsed), **kwargs)


def validate_arms(arms: tuple[Arm, ...]) -> None:
    """Raise ValueError unless arms are >= 2, uniquely named, with finite weights >= 0 summing to 1."""
    if len(arms) < 2:
        raise ValueError(f"an experiment needs at least 2 arms, got {len(arms)}")
    names = [a.name for a in arms]
    if any(not isinstance(n, str) or not n.strip() for n in names):
        raise ValueError(f"arm names must be non-empty strings, got {names!r}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"arm names must be unique; duplicated: {', '.join(dupes)}")
    for a in arms:
        w = a.weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise ValueError(f"arm {a.name!r}: weight must be a finite number, got {w!r}")
        if w < 0:
            raise ValueError(f"arm {a.name!r}: weight must be >= 0, got {w!r}")
    total = math.fsum(a.weight for a in arms)
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise ValueError(
            f"arm weights must sum to 1 (within {WEIGHT_TOLERANCE:g}), got {total!r} from {[a.weight for a in arms]!r}"
        )
    if not any(a.weight > 0 for a in arms):
        raise ValueError("at least one arm must have a positive weight")
