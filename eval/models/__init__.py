"""Models the evaluation embeds tiles with: gapless checkpoints, timm models, released folders, DINOv2 runs.

:func:`gapless.eval.models.resolve.load_model` turns a MODEL argument into a
:class:`~gapless.eval.models.backbone.Backbone`: one forward that returns the final normed tokens, how many of them
are prefix tokens (class and register), the normalisation the model expects (and where it came from) and its patch
size.
"""
