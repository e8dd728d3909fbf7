"""Downstream tasks: readers, metrics, feature building and the fine-tuning recipe.

A task = a reader (files -> examples) + a head (`zhplm.modeling.heads`) + a metric
(`metrics.py`) + a pipeline. Examples are plain dataclasses defined in `examples.py`.
"""
