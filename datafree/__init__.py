"""Data-free knowledge distillation: a student distilled from a teacher alone, on images synthesised
from the teacher (Fang et al., "Up to 100x Faster Data-free Knowledge Distillation", AAAI 2022, and
its baselines), with the reference's names (zju-vipa/Fast-Datafree) and this project's machinery.

Entry point: ``datafree_kd.py`` (``faster_data_free_kd.py`` is the same script); the loop lives in
:mod:`datafree.run`.
"""
