"""The data pipeline: magnification sampling, slide reading, the DALI graph and the CPU baseline loaders."""
