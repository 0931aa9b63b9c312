"""The DALI pipeline: graph-building functions (:mod:`.graph`), pipeline definitions (:mod:`.pipelines`), the GPU
read path (:mod:`.gpu_source`) and the loader that turns pipeline outputs into training batches (:mod:`.loader`).

Importing this package imports DALI but never CUDA: CPU pipelines (``device_id=None``) work anywhere.
"""
