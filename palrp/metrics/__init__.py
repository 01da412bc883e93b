"""Benchmark metrics: the ImageNet-Segmentation scores of docs/protocols.md, section 1 (:mod:`palrp.metrics.segmentation`)."""
from palrp.metrics.segmentation import (THRESHOLDS, SegmentationAccumulator, average_precision, binarize,
                                  intersection_union, minmax_normalize, otsu_threshold, pixel_correct,
                                  prepare_maps, segmentation_ap, threshold)

__all__ = ["THRESHOLDS", "SegmentationAccumulator", "average_precision", "binarize", "intersection_union",
           "minmax_normalize", "otsu_threshold", "pixel_correct", "prepare_maps", "segmentation_ap",
           "threshold"]
