"""The experiments' math: ablation conditions, token surgery, invariance, top images, activation maps."""
