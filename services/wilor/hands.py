"""What the model works on and what it returns: one image in, a list of hands out. The 21-joint order is here.

Every backend returns the same Hand; fields a backend cannot fill stay None (absent on the wire, never zeros)
and the backend lists the ones it fills (`FILLED_*`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# The one joint order of every keypoint array: OpenPose's hand order, which is WiLoR's output order (MANO's 16
# joints plus 5 fingertip vertices, remapped) and MediaPipe's landmark order. Each finger runs from the palm to
# the tip. Names follow the anatomical joints; WiLoR's are MANO's regressed joints at those places.
JOINT_NAMES: tuple[str, ...] = (
    "wrist",
    "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip",
    "index_mcp", "index_pip", "index_dip", "index_tip",
    "middle_mcp", "middle_pip", "middle_dip", "middle_tip",
    "ring_mcp", "ring_pip", "ring_dip", "ring_tip",
    "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip",
)  # fmt: skip
NUM_JOINTS = len(JOINT_NAMES)
# Bones as (parent, child) joint indices, for drawing skeletons.
BONES: tuple[tuple[int, int], ...] = tuple((0 if j % 4 == 1 else j - 1, j) for j in range(1, NUM_JOINTS))

# Hand fields by what fills them (names as in the proto's Hand message).
ALWAYS_FILLED = ("box", "side", "keypoints_2d", "keypoints_3d", "camera_translation", "focal_length")
MANO_FIELDS = ("global_orient", "hand_pose", "betas", "vertices")


@dataclass(frozen=True)
class Options:
    """Per-request options, already validated and with the config's defaults filled in."""

    detection_confidence: float = 0.3
    max_hands: int = 2
    rescale_factor: float = 2.0
    focal_length: float | None = None  # None: FOCAL_LENGTH / IMAGE_SIZE * max(W, H), WiLoR's camera
    skip_vertices: bool = False
    flat_hand_mean: bool = True  # hand_pose from the flat hand (WiLoR's); False: from MANO's hands_mean


@dataclass
class Query:
    """One image to find (or reconstruct) hands in."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    options: Options = field(default_factory=Options)
    boxes: np.ndarray | None = None  # (N, 4) xyxy pixels: given hands (detection skipped)
    is_right: np.ndarray | None = None  # (N,) bool, the given hands' sides

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass
class Hand:
    """One hand, all coordinates in the full input image / its camera (see protos/modelyard/v1/wilor.proto)."""

    box: np.ndarray  # (4,) xyxy pixels
    is_right: bool
    keypoints_2d: np.ndarray  # (21, 2) pixels
    keypoints_3d: np.ndarray  # (21, 3) metres, camera frame
    camera_translation: np.ndarray  # (3,) hand-centred frame -> camera frame
    focal_length: float  # pixels; principal point at the image centre
    score: float | None = None  # detector confidence; None when no detector ran (given boxes, upstream)
    side_score: float | None = None  # probability of the side, when classified separately
    global_orient: np.ndarray | None = None  # (3,) axis-angle
    hand_pose: np.ndarray | None = None  # (15, 3) axis-angle, see Options.flat_hand_mean
    betas: np.ndarray | None = None  # (10,)
    vertices: np.ndarray | None = None  # (778, 3) metres, camera frame
    given_index: int | None = None  # which given box this is
