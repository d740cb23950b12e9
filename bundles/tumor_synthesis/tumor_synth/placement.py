"""Where lesions go: random organ voxels deep enough inside the organ, away from vessels and other lesions.

Centres are found by drawing random voxel indices and looking up the label there (a few thousand lookups),
so the organ is never scanned as a whole in the usual case; only when the organ occupies a tiny fraction
of the volume (or is absent) does one full scan of the label run.
"""

from __future__ import annotations

import numpy as np

BATCH = 2048  # random voxel lookups per round
ROUNDS_BEFORE_SCAN = 2


def in_labels(values: np.ndarray, labels) -> np.ndarray:
    """Boolean mask of ``values`` equal to any of ``labels``.

    A chain of ``==`` comparisons: for the 1-3 labels of a preset it is 10-100x faster than ``np.isin`` on uint8
    label boxes (``np.isin`` sorts; measured 0.22 ms vs 0.02 ms on a 20^3 box, 8.2 ms vs 0.15 ms on 80^3).
    """
    out = values == labels[0]
    for v in labels[1:]:
        out |= values == v
    return out


class OrganSampler:
    """Draws candidate lesion centres inside an organ.

    Args:
        label: (X, Y, Z) label map (numpy view, any dtype).
        organ_labels: label values that make up the organ.
        rng: random state (the transform's ``self.R``).
    """

    def __init__(self, label: np.ndarray, organ_labels: list[int], rng: np.random.RandomState) -> None:
        self.label = label
        self.organ = np.asarray(organ_labels, dtype=label.dtype)
        self.rng = rng
        self._rounds = 0
        self._all: np.ndarray | None = None  # flat indices of the organ, only after a full scan
        self._queue: list[np.ndarray] = []  # organ hits of the last lookup round, used in order
        self._balls: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _is_organ(self, values: np.ndarray) -> np.ndarray:
        return in_labels(values, self.organ)

    def organ_present(self) -> bool:
        """True when some organ voxel exists (may trigger the one full scan)."""
        if self._all is None:
            if self.draw() is not None:
                return True
            self._scan()
        return self._all.size > 0

    def _scan(self) -> None:
        self._all = np.flatnonzero(self._is_organ(self.label).ravel())

    def draw(self) -> np.ndarray | None:
        """One random organ voxel (3,) int, or None when the organ is absent."""
        shape = self.label.shape
        if self._queue:
            return self._queue.pop()
        while self._all is None and self._rounds < ROUNDS_BEFORE_SCAN:
            self._rounds += 1
            idx = self.rng.randint(0, self.label.size, size=BATCH)
            ijk = np.stack(np.unravel_index(idx, shape), axis=1)
            hits = ijk[self._is_organ(self.label[tuple(ijk.T)])]
            if len(hits):
                self._rounds = 0
                self._queue = list(hits[::-1])
                return self._queue.pop()
        if self._all is None:
            self._scan()
        if self._all.size == 0:
            return None
        return np.array(np.unravel_index(self._all[self.rng.randint(self._all.size)], shape))

    def deep_enough(self, centre: np.ndarray, depth_mm: float, spacing: np.ndarray) -> bool:
        """True when a ball of radius ``depth_mm`` around ``centre`` lies in the organ (erosion test, local)."""
        if depth_mm <= 0:
            return True
        key = (depth_mm, *spacing)
        if key not in self._balls:
            r = np.floor(depth_mm / spacing).astype(int)
            grid = np.ogrid[tuple(slice(-k, k + 1) for k in r)]
            ball = sum((g * sp / depth_mm) ** 2 for g, sp in zip(grid, spacing)) <= 1.0
            self._balls[key] = (r, ball, np.concatenate([np.diag(r), -np.diag(r)]))  # + the six axis tips
        r, ball, tips = self._balls[key]
        lo = centre - r
        hi = centre + r + 1
        if np.any(lo < 0) or np.any(hi > np.asarray(self.label.shape)):
            return False
        # most rejected centres lie near the organ surface: the six axis points of the ball reject them cheaply
        if not self._is_organ(self.label[tuple((centre + tips).T)]).all():
            return False
        box = self.label[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        return bool(self._is_organ(box[ball]).all())


def collides(centre_mm: np.ndarray, radius_mm: float, placed: list[tuple[np.ndarray, float]]) -> bool:
    """True when the bounding sphere overlaps the bounding sphere of an already placed lesion."""
    if not placed:
        return False
    centres = np.array([c for c, _ in placed])
    radii = np.array([r for _, r in placed])
    return bool(np.any(((centres - centre_mm) ** 2).sum(axis=1) < (radius_mm + radii) ** 2))
