"""The ablations' preprocessing is torchvision's Resize(S) + CenterCrop(S), to the pixel."""

import numpy as np
import pytest
from PIL import Image
from torchvision import transforms

from sweep.experiments.conditions import resize_center_crop


@pytest.mark.parametrize("width, height", [(500, 375), (500, 333), (333, 500), (1, 1000), (224, 224), (225, 300)])
def test_resize_center_crop_is_torchvisions(width, height):
    rng = np.random.default_rng(width * 7919 + height)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    reference = transforms.Compose([transforms.Resize(224), transforms.CenterCrop(224)])(Image.fromarray(image))
    ours = resize_center_crop(image, 224)
    assert ours.shape == (224, 224, 3)
    assert np.abs(ours - np.asarray(reference, np.float32) / 255.0).max() <= 1 / 255 + 1e-7
