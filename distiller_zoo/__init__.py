"""Distillation losses, under RepDistiller's class names; each module also registers its method."""

from distiller_zoo.CC import Correlation
from distiller_zoo.KD import DistillKL
from distiller_zoo.PKT import PKT
from distiller_zoo.registry import get_method, method_names
from distiller_zoo.RKD import RKDLoss
from distiller_zoo.VID import VIDLoss

__all__ = [
    "Correlation",
    "DistillKL",
    "PKT",
    "RKDLoss",
    "VIDLoss",
    "get_method",
    "method_names",
]
