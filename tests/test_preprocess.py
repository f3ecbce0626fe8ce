"""The ablations' preprocessing is torchvision's Resize(S) + CenterCrop(S), to the pixel."""

import numpy as np
import pytest
from PIL import Image
from torchvision import transforms

from sweep.data.transforms import resize_center_crop


@pytest.mark.parametrize("width, height", [(500, 375), (500, 333), (333, 500), (1, 1000), (224, 224), (225, 300)])
def test_resize_center_crop_is_torchvisions(width, height):
    rng = np.random.default_rng(width * 7919 + height)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    reference = transforms.Compose([transforms.Resize(224), transforms.CenterCrop(224)])(Image.fromarray(image))
    ours = resize_center_crop(image, 224)
    assert ours.shape == (224, 224, 3)
    assert np.abs(ours - np.asarray(reference, np.float32) / 255.0).max() <= 1 / 255 + 1e-7


@pytest.mark.parametrize("width, height", [(500, 375), (333, 500), (1, 1000)])
@pytest.mark.parametrize("interpolation, crop_pct", [("bicubic", 0.875), ("bilinear", 0.9), ("nearest", 1.0)])
def test_a_models_own_eval_transform_is_timms(width, height, interpolation, crop_pct):
    """Top images, activation maps and invariance resize as the model's own evaluation does:
    short side to floor(size / crop_pct) with its interpolation, then the centre crop."""
    from sweep.models.sources import Preprocess

    pre = Preprocess(224, (0.5,) * 3, (0.5,) * 3, interpolation, crop_pct)
    rng = np.random.default_rng(width + height)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mode = transforms.InterpolationMode(interpolation)
    reference = transforms.Compose([transforms.Resize(pre.resize_size, mode), transforms.CenterCrop(224)])
    ours = resize_center_crop(image, 224, pre.resize_size, interpolation)
    expected = np.asarray(reference(Image.fromarray(image)), np.float32) / 255.0
    assert ours.shape == (224, 224, 3) and np.abs(ours - expected).max() <= 1 / 255 + 1e-7
