"""Distillation losses, under RepDistiller's class names; each module also registers its method."""

from distiller_zoo.KD import DistillKL
from distiller_zoo.registry import get_method, method_names

__all__ = ["DistillKL", "get_method", "method_names"]
