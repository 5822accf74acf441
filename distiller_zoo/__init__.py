"""Distillation losses, under their reference repositories' class names (RepDistiller's, KD-Zoo's, SemCKD's,
DLKD's, the distillers', mdistiller's); each module also registers its method."""

from distiller_zoo.AB import ABLoss
from distiller_zoo.AFD import AFD
from distiller_zoo.AT import Attention
from distiller_zoo.BSS import BSS, BSSAttacker
from distiller_zoo.CC import Correlation
from distiller_zoo.CRD import CRDLoss
from distiller_zoo.CTKD import CosineDecay, Global_T
from distiller_zoo.DIST import DIST
from distiller_zoo.DKD import DKD
from distiller_zoo.DML import DML
from distiller_zoo.EGA import EGA
from distiller_zoo.FitNet import HintLoss
from distiller_zoo.FSP import FSP
from distiller_zoo.FT import FactorTransfer
from distiller_zoo.HKD import HKDLoss
from distiller_zoo.ICD import DCDLoss, ICDLoss
from distiller_zoo.IRG import IRG, IRGLoss
from distiller_zoo.ITRD import ITLoss
from distiller_zoo.KD import DistillKL
from distiller_zoo.KDSVD import KDSVD
from distiller_zoo.Logits import Logits
from distiller_zoo.LwM import LwM
from distiller_zoo.MLKD import AlignLoss, CorrLoss, SupConLoss
from distiller_zoo.MLLD import MLLDLoss
from distiller_zoo.NST import NSTLoss
from distiller_zoo.OFD import OFD
from distiller_zoo.PKT import PKT
from distiller_zoo.registry import get_method, method_names
from distiller_zoo.ReviewKD import ReviewKD
from distiller_zoo.RKD import RKDLoss
from distiller_zoo.RRD import RRDLoss
from distiller_zoo.SemCKD import SelfA, SemCKDLoss
from distiller_zoo.SimKD import SimKD
from distiller_zoo.Sobolev import Sobolev
from distiller_zoo.SP import Similarity
from distiller_zoo.SRRL import SRRL
from distiller_zoo.VID import VIDLoss
from distiller_zoo.WSLD import WSLDLoss

__all__ = [
    "ABLoss",
    "AFD",
    "AlignLoss",
    "Attention",
    "BSS",
    "BSSAttacker",
    "CRDLoss",
    "CorrLoss",
    "Correlation",
    "CosineDecay",
    "DCDLoss",
    "DIST",
    "DKD",
    "DML",
    "DistillKL",
    "EGA",
    "FSP",
    "FactorTransfer",
    "Global_T",
    "HKDLoss",
    "HintLoss",
    "ICDLoss",
    "IRG",
    "IRGLoss",
    "ITLoss",
    "KDSVD",
    "Logits",
    "LwM",
    "MLLDLoss",
    "NSTLoss",
    "OFD",
    "PKT",
    "RKDLoss",
    "RRDLoss",
    "ReviewKD",
    "SRRL",
    "SelfA",
    "SemCKDLoss",
    "SimKD",
    "Similarity",
    "Sobolev",
    "SupConLoss",
    "VIDLoss",
    "WSLDLoss",
    "get_method",
    "method_names",
]
