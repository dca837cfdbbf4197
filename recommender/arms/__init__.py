"""Recommender arms: one module each, one interface (base.Arm), a registry by name.

An experiment arm is `baseline`, `visual` (the tenant's active model, by default the deployed embedder)
or `visual@<model key>` (that model, once its deployment is ready: db/deployments.py).
"""

import re

from recommender.arms.base import Arm, ArmRequest, ArmResult
from recommender.arms.baseline import BaselineArm
from recommender.arms.visual import VisualArm

ARMS: dict[str, type[Arm]] = {BaselineArm.name: BaselineArm, VisualArm.name: VisualArm}
MAX_ARM_NAME = 64  # the assignment and event columns' width
# A model key as db/vector_index.py accepts it, after "visual@".
ARM_NAME = r"^(baseline|visual(@[A-Za-z0-9_.:@/+-]{1,120})?)$"
_ARM_NAME = re.compile(ARM_NAME)


def split_arm(name: str) -> tuple[str, str | None]:
    """("visual", "<model key>") for `visual@<model key>`, else (name, None); ValueError for a malformed name."""
    if not isinstance(name, str) or len(name) > MAX_ARM_NAME or not _ARM_NAME.match(name):
        raise ValueError(
            f"arm {name!r} is not `baseline`, `visual` or `visual@<model key>` ({MAX_ARM_NAME} characters at most)"
        )
    base, _, key = name.partition("@")
    return base, key or None


__all__ = ["ARMS", "ARM_NAME", "Arm", "ArmRequest", "ArmResult", "BaselineArm", "VisualArm", "split_arm"]
