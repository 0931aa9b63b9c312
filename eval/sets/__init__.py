"""Evaluation sets: labelled regions cut at every evaluated mpp, with patient-disjoint folds, in one HDF5 file."""
