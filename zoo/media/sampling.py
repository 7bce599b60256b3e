"""The video policy: what every video model in `zoo` sees, and the decoded :class:`Video` it gets.

A video item is a path, encoded file ``bytes`` or a ``data:`` URI (MP4/MOV, Matroska/WebM, AVI, Ogg or MPEG-TS,
any codec FFmpeg decodes), or
frames already in memory: a ``TxHxWxC`` numpy array (uint8, or float in 0..1) or a list of images. It decodes
to a :class:`Video`: sampled RGB frames, their times, and the audio track (mono, at the model's rate) when the
model listens and the file has one.

The sampling policy (what every video model in `zoo` sees):

- only the first :data:`MAX_VIDEO_SECONDS` of a file are read (a longer one is cut, counted in one
  :class:`VideoTruncationWarning` per call);
- frames are taken at :data:`VIDEO_FPS` per second of that window, at most :data:`MAX_FRAMES` of them; a
  longer window is sampled uniformly across its length (each frame is the first one at or after the start of
  its equal slot). Frames passed in memory count as sampled at :data:`VIDEO_FPS` (more than
  :data:`MAX_FRAMES` are thinned uniformly), which is also the rate they travel to a server at;
- each kept frame is scaled down so its longer side is at most :data:`MAX_FRAME_SIDE`.

This module is the policy; :mod:`zoo.media.video` decodes (PyAV, FFmpeg's libraries) under it, within the budgets of
:mod:`zoo.media.budgets` (an allow-listed container, every decoded frame's size, the frames and pixels decoded
per item, the sound track counted in samples, a deadline per item). Only kept frames are turned into images.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

VIDEO_FPS = 2.0  # frames sampled per second of video (Qwen2.5-Omni's default rate)
MAX_FRAMES = 16  # frames kept at most; a longer video is sampled uniformly across its window
MAX_FRAME_SIDE = 768  # kept frames are scaled down to this longer side (the models read less than that)
MAX_VIDEO_SECONDS = 300.0  # a file is read this far at most; a longer one is cut (and counted)
WIRE_FPS = VIDEO_FPS  # the rate in-memory frames are written at when they travel to a server


class VideoTruncationWarning(UserWarning):
    """Some video inputs were longer than :data:`MAX_VIDEO_SECONDS` and were cut."""


@dataclass
class Video:
    """A decoded video: ``frames`` (RGB ``PIL.Image`` list, in time order), their ``times`` in seconds, and
    the audio track as mono float32 samples at the model's rate (None: silent, or the model does not listen)."""

    frames: list
    times: list[float]
    audio: np.ndarray | None = None

    @property
    def fps(self) -> float:
        """The rate the frames were sampled at (frames per second of video)."""
        if len(self.times) < 2:
            return VIDEO_FPS
        span = self.times[-1] - self.times[0]
        return (len(self.times) - 1) / span if span > 0 else VIDEO_FPS


def slots(duration: float | None, fps: float = VIDEO_FPS, max_frames: int = MAX_FRAMES) -> list[float]:
    """The times frames are taken at for a window of ``duration`` seconds (None: unknown, so from the start at
    ``fps``): ``fps`` per second, at most ``max_frames``, each at the start of its equal slot of the window."""
    if duration is None or duration <= 0:
        return [i / fps for i in range(max_frames)]
    n = int(min(max_frames, max(1, np.floor(duration * fps))))
    return [i * duration / n for i in range(n)]


def frame_size(width: int, height: int) -> tuple[int, int]:
    """A kept frame's size: scaled down so that its longer side is at most :data:`MAX_FRAME_SIDE`."""
    scale = min(1.0, MAX_FRAME_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def encode_frames(frames: list, fps: float = WIRE_FPS, *, audio: np.ndarray | None = None,
                  sample_rate: int = 16000, lossless: bool = True) -> bytes:
    """Frames (and a mono ``audio`` track at ``sample_rate``) as a video file: lossless FFV1 + PCM in
    Matroska, the form in-memory frames travel to a server in, or (``lossless=False``) MPEG-4 + AAC in MP4,
    an everyday lossy file."""
    import av

    codec, container, pix_fmt, audio_codec = (("ffv1", "matroska", "bgr0", "pcm_s16le") if lossless
                                              else ("mpeg4", "mp4", "yuv420p", "aac"))
    width, height = frames[0].size
    width, height = width + width % 2, height + height % 2  # 4:2:0 needs even sides
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        sound = out.add_stream(audio_codec, rate=sample_rate, layout="mono") if audio is not None else None
        for img in frames:
            frame = av.VideoFrame.from_image(img.convert("RGB").resize((width, height)))
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
        if sound is not None:
            pcm = np.clip(np.asarray(audio, dtype=np.float32), -1, 1)
            kind, values = ("s16", (pcm * 32767).astype(np.int16)) if lossless else ("fltp", pcm)
            step = 1024  # AAC's frame size
            for i in range(0, len(values), step):
                chunk = av.AudioFrame.from_ndarray(values[None, i:i + step], format=kind, layout="mono")
                chunk.sample_rate = sample_rate
                out.mux(sound.encode(chunk))
            out.mux(sound.encode())
    return buf.getvalue()
