"""Datasets the experiments read: ImageNet folders, box annotations, ground truth."""
