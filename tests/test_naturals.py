"""The demo's natural images without a dataset (sweep/pipelines/naturals.py): the shipped photos and
their crops as the split `photos`, each visualized unit's top images with thumbnails and activation
maps on its best ones, shown on its atlas page; a second run keeps what is there."""

import shutil

from sweep.store.results import Results


def test_top_photos_and_maps_beside_the_visualization(tmp_path, smoke_root, ray_local):
    from sweep.pipelines.naturals import photo_naturals
    from sweep.views.atlas import build_atlas, slug

    import numpy as np
    from PIL import Image

    from sweep.data.imagenet import image_folder
    from sweep.data.photos import photo_crops

    root = tmp_path / "root"
    shutil.copytree(smoke_root, root)
    # 15 of the shipped photos and crops, small (the job writes all 150 into the root: the test's time)
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, image in sorted(photo_crops().items())[::10]:
        Image.fromarray(np.ascontiguousarray(image[::4, ::4])).save(folder / f"{name}.png")
    records = image_folder(str(folder)).records
    first = photo_naturals(str(root), "dev/vit-micro", {0: [0, 1]}, weights="random", k=1, maps_per_unit=1,
                           records=records)
    tops = Results(str(root)).top_images(split="photos", model="dev/vit-micro")
    assert tops["image_id"].isin([r["image_id"] for r in records]).all()
    assert first["top_rows"] == len(tops) == 64  # k=1 for each of block 0's 64 units
    assert set(tops["layer"]) == {0}
    assert first["maps"] >= 1  # each unit's best photo (a shared one once)
    again = photo_naturals(str(root), "dev/vit-micro", {0: [0, 1]}, weights="random", k=1, maps_per_unit=1,
                           records=records)
    assert again == {"top_rows": None, "maps": 0}  # kept
    site = tmp_path / "site"
    build_atlas(str(root), str(site))
    page = next((site / "features").glob(f"{slug('dev/vit-micro')}/0/mlp-0.html")).read_text()
    assert "Top natural images" in page and "photos" in page and "Activation maps" in page
    assert page.count("top image") == 1 and "-map0.png" in page
