"""Distillation losses, under RepDistiller's class names; each module also registers its method."""

from distiller_zoo.AB import ABLoss
from distiller_zoo.AT import Attention
from distiller_zoo.CC import Correlation
from distiller_zoo.CRD import CRDLoss
from distiller_zoo.DML import DML
from distiller_zoo.EGA import EGA
from distiller_zoo.FitNet import HintLoss
from distiller_zoo.FSP import FSP
from distiller_zoo.FT import FactorTransfer
from distiller_zoo.ICD import DCDLoss, ICDLoss
from distiller_zoo.ITRD import ITLoss
from distiller_zoo.KD import DistillKL
from distiller_zoo.KDSVD import KDSVD
from distiller_zoo.NST import NSTLoss
from distiller_zoo.PKT import PKT
from distiller_zoo.registry import get_method, method_names
from distiller_zoo.RKD import RKDLoss
from distiller_zoo.RRD import RRDLoss
from distiller_zoo.SimKD import SimKD
from distiller_zoo.SP import Similarity
from distiller_zoo.SRRL import SRRL
from distiller_zoo.VID import VIDLoss
from distiller_zoo.WSLD import WSLDLoss

__all__ = [
    "ABLoss",
    "Attention",
    "CRDLoss",
    "Correlation",
    "DCDLoss",
    "DML",
    "DistillKL",
    "EGA",
    "FSP",
    "FactorTransfer",
    "HintLoss",
    "ICDLoss",
    "ITLoss",
    "KDSVD",
    "NSTLoss",
    "PKT",
    "RKDLoss",
    "RRDLoss",
    "SRRL",
    "Similarity",
    "SimKD",
    "VIDLoss",
    "WSLDLoss",
    "get_method",
    "method_names",
]
