"""Synthetic whole-slide images written in real formats (SVS, TIFF, OME-TIFF, Philips, DICOM): tissue scenes, their pyramids, the `gapless synth` command."""
