"""Recommender arms: one module each, one interface (base.Arm), a registry by name."""

from recommender.arms.base import Arm, ArmRequest, ArmResult
from recommender.arms.baseline import BaselineArm
from recommender.arms.visual import VisualArm

ARMS: dict[str, type[Arm]] = {BaselineArm.name: BaselineArm, VisualArm.name: VisualArm}

__all__ = ["ARMS", "Arm", "ArmRequest", "ArmResult", "BaselineArm", "VisualArm"]
