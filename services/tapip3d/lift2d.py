"""lift2d: the CPU reference backend — 2D tracking lifted to 3D with the depth maps and cameras.

TAPVid-3D's "2D tracker + depth lifting" baseline, made careful:
1. Each point starts at its query frame (its world query projected with K and the world→camera extrinsics) and
   is tracked frame to frame, forward and (for queries after frame 0) backward, with pyramidal Lucas-Kanade
   (OpenCV). A forward-backward check (track t→t+1, then back) rejects drifting or ambiguous matches.
2. The depth map is read at the tracked sub-pixel position (bilinear on smooth surfaces, nearest across depth
   edges) and unprojected with K and the inverse extrinsics into world coordinates.
3. Occlusion: the depth map there must agree with the point's last depth seen from the new camera (a nearer
   surface covers it), and no nearer surface may lie inside the Lucas-Kanade window (an occluder's edge drags
   the window along with it, so such a match is not trusted), nor may the window leave the image.
4. A point whose match fails either test is *lost*. It is assumed to move like its nearest tracked neighbours on
   the same surface (their median 3D motion since the loss), and is visible there exactly when geometry says so:
   in the frame and not covered (the depth map agrees with its predicted depth). With `reacquire`, lost points
   are looked for at their predicted position — Lucas-Kanade from their query-frame patch, the forward-backward
   check, a patch correlation and the depth tests — and tracking resumes when all hold (e.g. after an occluder
   has passed).

Visibility is a score in [0, 1] compared with the visibility threshold: for an observed point, flow agreement
(1 - fb_error / fb_max) x depth agreement (1 - |depth - expected| / (depth_rtol · expected)); for a predicted one,
at most PREDICTED_CONFIDENCE x depth agreement; 0 for a covered or out-of-frame one.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import cv2
import numpy as np

from modelyard.runtime.progress import Progress
from modelyard.tapip3d import geometry
from modelyard.tapip3d.backend import Backend, TrackOptions, Tracks
from modelyard.tapip3d.config import Lift2DConfig
from modelyard.tapip3d.sequence import RGBDClip

# A lost point is assumed to move like its nearest tracked neighbours: up to this many, within this fraction of
# its depth (a surface's own points are that close; a background behind a foreground object is not).
NEIGHBOURS = 8
NEIGHBOUR_RADIUS = 0.15
# The most a predicted (not observed) position scores: under the default visibility threshold of 0.5 only when
# the depth map agrees well with it.
PREDICTED_CONFIDENCE = 0.6
NCC_PATCH_PX = 9
MATCH_NCC = 0.8  # frame to frame, a patch changes little
# Lucas-Kanade near the image border (a quarter window) jumps: matches there are not trusted.
BORDER_MARGIN = 0.25


class Lift2D(Backend):
    name = "lift2d"

    def __init__(self, config: Lift2DConfig) -> None:
        self.config = config

    def load(self) -> None:
        """Nothing to load: OpenCV and the config are all it needs."""

    def close(self) -> None:
        """Nothing to release."""

    def track(self, clip: RGBDClip, queries: np.ndarray, options: TrackOptions, progress: Progress) -> Tracks:
        cfg = self.config
        threshold = cfg.visibility_threshold if options.visibility_threshold is None else options.visibility_threshold
        tracker = _Tracker(
            clip,
            queries,
            cfg,
            resolution_factor=options.resolution_factor or cfg.resolution_factor,
            iterations=options.iterations or cfg.iterations,
            progress=progress,
        )
        coords, score = tracker.run()
        return Tracks(coords.astype(np.float32), score >= threshold)

    def info(self) -> dict[str, Any]:
        return {
            "model": "lift2d: pyramidal Lucas-Kanade + depth lifting (CPU reference for TAPIP3D)",
            "backend": "lift2d",
            "checkpoint": "",
            "architecture": self.config.model_dump(),
            "details": {"opencv": cv2.__version__},
        }


class _Tracker:
    """One clip's tracking: the outputs (world coords, visibility score, observed or predicted) for every frame
    and point, filled by a forward and a backward sweep."""

    def __init__(
        self,
        clip: RGBDClip,
        queries: np.ndarray,
        cfg: Lift2DConfig,
        resolution_factor: float,
        iterations: int,
        progress: Progress,
    ) -> None:
        self.clip, self.cfg, self.progress = clip, cfg, progress
        self.full_hw = clip.size_hw
        scale = float(np.sqrt(resolution_factor))
        self.track_hw = (max(8, round(self.full_hw[0] * scale)), max(8, round(self.full_hw[1] * scale)))
        self.window = (cfg.window_px, cfg.window_px)
        self.criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, iterations, cfg.epsilon)
        t_count, n = clip.num_frames, len(queries)
        self.query_t = queries[:, 0].astype(np.int64)
        self.query_world = queries[:, 1:].astype(np.float64)
        pixels, _ = geometry.project_world(
            self.query_world, clip.intrinsics[self.query_t], clip.extrinsics[self.query_t]
        )
        self.query_px = self._to_track(pixels).astype(np.float32)
        self.coords = np.full((t_count, n, 3), np.nan)
        self.score = np.zeros((t_count, n))
        self.coords[self.query_t, np.arange(n)] = self.query_world
        self.score[self.query_t, np.arange(n)] = 1.0
        self.observed = np.zeros((t_count, n), bool)  # seen in the images (not predicted)
        self.observed[self.query_t, np.arange(n)] = True
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self._near: dict[int, np.ndarray] = {}
        # forward from the first query frame to the end, backward from the last query frame to the start
        self.steps_total = (t_count - 1 - int(self.query_t.min(initial=t_count - 1))) + int(self.query_t.max(initial=0))
        self.steps_done = 0

    # -- coordinates and images -----------------------------------------------------------------------
    def _to_track(self, pixels: np.ndarray) -> np.ndarray:
        return geometry.resize_pixels(pixels, self.full_hw, self.track_hw)

    def _to_full(self, pixels: np.ndarray) -> np.ndarray:
        return geometry.resize_pixels(pixels, self.track_hw, self.full_hw)

    def _gray(self, t: int) -> np.ndarray:
        gray = cv2.cvtColor(self.clip.video[t], cv2.COLOR_RGB2GRAY)
        if self.track_hw != self.full_hw:
            shrink = self.track_hw[0] < self.full_hw[0]
            gray = cv2.resize(gray, self.track_hw[::-1], interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return gray

    def _frame(self, t: int) -> np.ndarray:
        """Grey frames are made once and shared by the forward, backward and reacquire calls; a few are kept
        (the two frames of a step and recent query frames). (OpenCV's Python binding takes no prebuilt pyramids.)"""
        if t in self._frames:
            self._frames.move_to_end(t)
            return self._frames[t]
        self._frames[t] = self._gray(t)
        if len(self._frames) > 6:
            self._frames.popitem(last=False)
        return self._frames[t]

    def _flow(
        self, source: int, target: int, points: np.ndarray, guess: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Lucas-Kanade source→target and back: (positions, ok, forward-backward error in pixels). With a guess
        (reacquisition: within a pixel or two) only the finest levels run, so coarse levels cannot drag it off."""
        image_a, image_b = self._frame(source), self._frame(target)
        levels = self.cfg.pyramid_levels if guess is None else min(1, self.cfg.pyramid_levels)
        p0 = points.reshape(-1, 1, 2).astype(np.float32)
        start = p0 if guess is None else guess.reshape(-1, 1, 2).astype(np.float32)
        flags = 0 if guess is None else cv2.OPTFLOW_USE_INITIAL_FLOW
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(
            image_a,
            image_b,
            p0,
            start.copy(),
            winSize=self.window,
            maxLevel=levels,
            criteria=self.criteria,
            flags=flags,
        )
        back, st2, _ = cv2.calcOpticalFlowPyrLK(
            image_b, image_a, p1, p0.copy(), winSize=self.window, maxLevel=levels, criteria=self.criteria
        )
        p1, back = np.asarray(p1).reshape(-1, 2), np.asarray(back).reshape(-1, 2)
        fb = np.linalg.norm(back - points.reshape(-1, 2), axis=-1)
        h, w = self.track_hw
        m = BORDER_MARGIN * self.cfg.window_px
        with np.errstate(invalid="ignore"):
            inside = (p1[:, 0] >= m) & (p1[:, 0] <= w - 1 - m) & (p1[:, 1] >= m) & (p1[:, 1] <= h - 1 - m)
            ok = (st1.ravel() == 1) & (st2.ravel() == 1) & inside & (fb < self.cfg.fb_max_px)
        return p1, ok, fb

    def _ncc(self, frame_a: int, points_a: np.ndarray, frame_b: int, points_b: np.ndarray) -> np.ndarray:
        """Normalised cross-correlation of small patches around points_a in frame_a and points_b in frame_b."""
        r = NCC_PATCH_PX // 2
        oy, ox = np.mgrid[-r : r + 1, -r : r + 1]

        def patches(frame: int, points: np.ndarray) -> np.ndarray:
            gray = self._frame(frame)
            mx = (points[:, :1] + ox.ravel()[None]).astype(np.float32)
            my = (points[:, 1:2] + oy.ravel()[None]).astype(np.float32)
            sampled = cv2.remap(gray, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            values = sampled.astype(np.float64)
            return values - values.mean(axis=1, keepdims=True)

        a, b = patches(frame_a, points_a), patches(frame_b, points_b)
        denominator = np.sqrt((a * a).sum(1) * (b * b).sum(1))
        return np.where(denominator > 1e-9, (a * b).sum(1) / np.maximum(denominator, 1e-9), 0.0)

    def _lift(
        self, t: int, pixels_track: np.ndarray, expected_z: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Depth at the pixels of frame t → (world points, agreement score in [0,1], consistent with expected)."""
        full = self._to_full(pixels_track)
        rtol = self.cfg.depth_rtol
        depth = geometry.sample_depth(self.clip.depths[t], full, rtol)
        with np.errstate(invalid="ignore", divide="ignore"):
            valid = np.isfinite(depth) & (depth > 0) & (expected_z > 0)
            relative = np.abs(depth - expected_z) / expected_z
        agreement = np.where(valid, np.clip(1 - relative / rtol, 0, 1), 0.0)
        consistent = valid & (relative <= rtol)
        world = geometry.pixels_to_world(
            full, np.where(valid, depth, 1.0), self.clip.intrinsics[t][None], self.clip.extrinsics[t][None]
        )
        return world, agreement, consistent

    def _nearer_surface(self, t: int, pixels_full: np.ndarray, expected_z: np.ndarray) -> np.ndarray:
        """True where a surface nearer than the point (beyond depth_rtol) lies within the Lucas-Kanade window:
        the point is at an occluding edge, where the window gets dragged along by the occluder."""
        if t not in self._near:
            depth = np.where(np.isfinite(self.clip.depths[t]) & (self.clip.depths[t] > 0), self.clip.depths[t], np.inf)
            radius = max(1, round(self.cfg.window_px / 2 * self.full_hw[1] / self.track_hw[1]))
            self._near[t] = cv2.erode(depth.astype(np.float32), np.ones((2 * radius + 1, 2 * radius + 1), np.uint8))
            if len(self._near) > 4:
                self._near.pop(next(iter(self._near)))
        nearest = geometry.sample_nearest(self._near[t], pixels_full)
        with np.errstate(invalid="ignore"):
            return nearest < expected_z * (1 - self.cfg.depth_rtol)

    def _observe(self, t: int, pixels: np.ndarray, expected_z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Lift tracked pixels of frame t: (world points, depth agreement in [0,1], seen = depth consistent and no
        nearer surface at the point's edge)."""
        world, agreement, consistent = self._lift(t, pixels, expected_z)
        return world, agreement, consistent & ~self._nearer_surface(t, self._to_full(pixels), expected_z)

    # -- the sweeps -----------------------------------------------------------------------------------
    def run(self) -> tuple[np.ndarray, np.ndarray]:
        t_count = self.clip.num_frames
        self._sweep(list(range(t_count)), "tracking")
        if self.query_t.max(initial=0) > 0:
            self._sweep(list(range(t_count - 1, -1, -1)), "tracking backward")
        return self.coords, self.score

    def _sweep(self, order: list[int], stage: str) -> None:
        """Track every point from its query frame along `order` (forward, or backward for the frames before it)."""
        position = {t: k for k, t in enumerate(order)}
        start = np.array([position[t] for t in self.query_t])
        state = _SweepState(self.query_px, self.query_world)
        for k in range(int(start.min()), len(order) - 1):  # from the first query frame along `order`
            t, t_next = order[k], order[k + 1]
            state.alive |= start == k
            state.started |= start == k
            expected_z = geometry.transform(state.last_world, self.clip.extrinsics[t_next][None])[:, 2]
            tracked = np.nonzero(state.alive)[0]
            if len(tracked):
                moved, ok, fb = self._flow(t, t_next, state.pos[tracked])
                world, agreement, seen = self._observe(t_next, moved, expected_z[tracked])
                keep = ok & seen
                if keep.any():  # the patch must still look the same (coarse pyramid levels can drag a match off)
                    keep[keep] = self._ncc(t, state.pos[tracked[keep]], t_next, moved[keep]) >= MATCH_NCC
                score = np.clip(1 - fb / self.cfg.fb_max_px, 0, 1) * agreement
                self._record(state, tracked[keep], t_next, moved[keep], world[keep], score[keep])
                broke = tracked[~keep]
                depth = geometry.transform(state.last_world[broke], self.clip.extrinsics[t][None])[:, 2]
                state.lose(broke, depth, tracked[keep], self.coords[t])
            lost = np.nonzero(state.started & ~state.alive)[0]
            if len(lost):
                state.predict(lost, self.coords[t_next], self.observed[t_next])
                self._predicted(lost, t_next, state.predicted[lost])
                if self.cfg.reacquire:
                    self._reacquire(state, lost, t_next)
            self.steps_done += 1
            self.progress.report(self.steps_done, self.steps_total, stage)

    def _predicted(self, lost: np.ndarray, t: int, predicted: np.ndarray) -> None:
        """Lost points at their predicted positions. Visibility is geometric there: in the frame and not covered
        (the depth map agrees with the predicted depth), scored at most PREDICTED_CONFIDENCE — below an observed
        point's, so a threshold above it keeps only confirmed observations."""
        self.coords[t, lost] = predicted
        pixels, z = geometry.project_world(predicted, self.clip.intrinsics[t][None], self.clip.extrinsics[t][None])
        h, w = self.full_hw
        with np.errstate(invalid="ignore"):
            inside = (z > 0) & (pixels[:, 0] >= -0.5) & (pixels[:, 0] <= w - 0.5)
            inside &= (pixels[:, 1] >= -0.5) & (pixels[:, 1] <= h - 0.5)
        if inside.any():
            _, agreement, consistent = self._lift(t, self._to_track(pixels[inside]), z[inside])
            self.score[t, lost[inside]] = np.where(consistent, PREDICTED_CONFIDENCE * agreement, 0.0)

    def _record(
        self, state: _SweepState, index: np.ndarray, t: int, pixels: np.ndarray, world: np.ndarray, score: np.ndarray
    ) -> None:
        """Points observed at frame t: their world positions, scores and tracking state."""
        self.coords[t, index] = world
        self.score[t, index] = score
        self.observed[t, index] = True
        state.pos[index] = pixels
        state.last_world[index] = world
        state.alive[index] = True

    def _reacquire(self, state: _SweepState, lost: np.ndarray, t: int) -> None:
        """Look for lost points where they are predicted to be in frame t; resume those that match."""
        predicted = state.predicted[lost]
        guess_full, z = geometry.project_world(predicted, self.clip.intrinsics[t][None], self.clip.extrinsics[t][None])
        guess = self._to_track(guess_full)
        h, w = self.track_hw
        with np.errstate(invalid="ignore"):
            inside = (z > 0) & (guess[:, 0] >= 0) & (guess[:, 0] <= w - 1) & (guess[:, 1] >= 0) & (guess[:, 1] <= h - 1)
        if not inside.any():
            return
        # Only where the depth map shows a surface at the predicted depth (not an occluder in front).
        _, _, uncovered = self._observe(t, guess[inside], z[inside])
        candidates = np.nonzero(inside)[0][uncovered]
        for frame in np.unique(self.query_t[lost[candidates]]):
            group = candidates[self.query_t[lost[candidates]] == frame]
            index = lost[group]
            found, ok, fb = self._flow(int(frame), t, self.query_px[index], guess=guess[group])
            near_guess = np.linalg.norm(found - guess[group], axis=-1) <= self.cfg.window_px / 2
            world, agreement, seen = self._observe(t, found, z[group])
            keep = ok & near_guess & seen
            if keep.any():
                keep[keep] = self._ncc(int(frame), self.query_px[index[keep]], t, found[keep]) >= self.cfg.reacquire_ncc
            if keep.any():
                score = np.clip(1 - fb / self.cfg.fb_max_px, 0, 1) * agreement
                self._record(state, index[keep], t, found[keep], world[keep], score[keep])


class _SweepState:
    """Per point, along one sweep: its 2D position (tracking resolution), whether its 2D track is intact, its last
    observed world position, and — once lost — the neighbours whose motion it is assumed to share."""

    def __init__(self, query_px: np.ndarray, query_world: np.ndarray) -> None:
        n = len(query_px)
        self.pos = query_px.copy()
        self.alive = np.zeros(n, bool)
        self.started = np.zeros(n, bool)
        self.last_world = query_world.copy()
        self.predicted = query_world.copy()
        self.anchor = query_world.copy()  # last_world when the point was lost
        self.neighbours = np.full((n, NEIGHBOURS), -1)
        self.neighbour_base = np.zeros((n, NEIGHBOURS, 3))

    def lose(self, index: np.ndarray, depth: np.ndarray, tracked: np.ndarray, coords_t: np.ndarray) -> None:
        """Points whose track broke after frame t (at camera `depth` there): remember up to NEIGHBOURS nearby points
        still being tracked, within NEIGHBOUR_RADIUS of that depth (so on the same surface, usually the same
        object), and where they were at frame t (`coords_t`)."""
        self.alive[index] = False
        if not len(index):
            return
        self.anchor[index] = self.last_world[index]
        self.predicted[index] = self.last_world[index]
        self.neighbours[index] = -1
        if not len(tracked):
            return
        others = coords_t[tracked]
        for chunk in np.array_split(np.arange(len(index)), max(1, len(index) // 256)):  # bounded (lost x tracked)
            lost = index[chunk]
            distance = np.linalg.norm(self.anchor[lost][:, None] - others[None], axis=-1)
            order = np.argsort(distance, axis=1)[:, :NEIGHBOURS]
            near = np.take_along_axis(distance, order, axis=1) <= NEIGHBOUR_RADIUS * np.abs(depth[chunk])[:, None]
            chosen = np.where(near, tracked[order], -1)
            self.neighbours[lost, : chosen.shape[1]] = chosen
            self.neighbour_base[lost, : chosen.shape[1]] = coords_t[np.maximum(chosen, 0)]

    def predict(self, lost: np.ndarray, coords_t: np.ndarray, seen_t: np.ndarray) -> None:
        """A lost point moves by the median motion of its neighbours seen at frame t, else stays predicted."""
        neighbours = self.neighbours[lost]
        usable = (neighbours >= 0) & seen_t[np.maximum(neighbours, 0)]
        has = usable.any(axis=1)
        if not has.any():
            return
        motion = coords_t[np.maximum(neighbours[has], 0)] - self.neighbour_base[lost[has]]
        motion[~usable[has]] = np.nan
        self.predicted[lost[has]] = self.anchor[lost[has]] + np.nanmedian(motion, axis=1)
