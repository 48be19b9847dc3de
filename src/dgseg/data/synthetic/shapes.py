"""Shape masks and procedural noise for drawing objects: functions of broadcast face coordinates a [1, w]
(or [h, w]) and b [h, 1] in metres, returning bool masks or floats of the broadcast shape."""

from __future__ import annotations

import functools

import numpy as np


def ellipse(a, b, ca, cb, ra, rb):
    return ((a - ca) / ra) ** 2 + ((b - cb) / rb) ** 2 <= 1.0


def rect(a, b, a0, a1, b0, b1):
    return (a >= a0) & (a <= a1) & (b >= b0) & (b <= b1)


def capsule(a, b, p, q, r):
    """Points within r of the segment p-q."""
    pa, pb = a - p[0], b - p[1]
    da, db = q[0] - p[0], q[1] - p[1]
    t = np.clip((pa * da + pb * db) / max(da * da + db * db, 1e-9), 0.0, 1.0)
    return (pa - t * da) ** 2 + (pb - t * db) ** 2 <= r * r


def ring(a, b, ca, cb, r_out, r_in):
    d = (a - ca) ** 2 + (b - cb) ** 2
    return (d <= r_out * r_out) & (d >= r_in * r_in)


def superellipse(a, b, ca, cb, ra, rb, p=4.0):
    return np.abs((a - ca) / ra) ** p + np.abs((b - cb) / rb) ** p <= 1.0


@functools.lru_cache(maxsize=4)
def periodic_noise(n: int = 256, beta: float = 2.0, seed: int = 7) -> np.ndarray:
    """Tileable fractal noise [n, n] in about [-1, 1] (FFT-filtered white noise, fixed seed)."""
    rng = np.random.default_rng(seed)
    k = np.fft.fftfreq(n)[:, None] ** 2 + np.fft.rfftfreq(n)[None, :] ** 2
    k[0, 0] = 1.0
    spec = (rng.standard_normal((n, n // 2 + 1)) + 1j * rng.standard_normal((n, n // 2 + 1))) / k ** (
        beta / 2
    )
    spec[0, 0] = 0.0
    x = np.fft.irfft2(spec, s=(n, n))
    return (x / (3.0 * x.std())).clip(-1, 1).astype(np.float32)


def noise_at(a, b, scale: float, offset: float = 0.0, n: int = 256, beta: float = 2.0) -> np.ndarray:
    """:func:`periodic_noise` at (a, b) x ``scale`` cells per unit, shifted by ``offset`` (0..1)."""
    tex = periodic_noise(n, beta)
    i = (np.floor(b * scale + offset * 37.0)).astype(np.int64) % n
    j = (np.floor(a * scale + offset * 91.0)).astype(np.int64) % n
    return tex[i, j]


def cell_hash(i: np.ndarray, j: np.ndarray, k: int) -> np.ndarray:
    """Deterministic pseudo-random floats in [0, 1) for integer arrays i, j and a key k."""
    h = (i.astype(np.int64) * 73856093) ^ (j.astype(np.int64) * 19349663) ^ (int(k) * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h ^ (h >> 16)) & 0xFFFF).astype(np.float32) / 65536.0
