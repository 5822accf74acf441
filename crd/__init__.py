"""Contrastive Representation Distillation (CRD): memory banks, loss and negative sampling."""
