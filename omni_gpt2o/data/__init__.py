"""Data sets (Shapes, COCO, sample photographs), their split layout, loaders and on-disk caches."""
