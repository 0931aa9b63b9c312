"""Evaluation per magnification: multi-scale sets, features, RankMe, k-NN and linear probes, reports."""
