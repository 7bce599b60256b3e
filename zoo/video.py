"""Video items: decoding (PyAV, FFmpeg's libraries), the frame-sampling policy and its bounds.

A video item is a path, encoded file ``bytes`` or a ``data:`` URI (any container and codec FFmpeg reads), or
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

Bounds hold before allocation: the stream's declared frame size is checked against ``MAX_IMAGE_PIXELS``,
at most :data:`MAX_DECODED_FRAMES` frames are decoded whatever the file declares, only kept frames are turned
into arrays, and the audio track is read no further than the model's audio window.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from . import truncation
from .errors import InputError

VIDEO_FPS = 2.0  # frames sampled per second of video (Qwen2.5-Omni's default rate)
MAX_FRAMES = 16  # frames kept at most; a longer video is sampled uniformly across its window
MAX_FRAME_SIDE = 768  # kept frames are scaled down to this longer side (the models read less than that)
MAX_VIDEO_SECONDS = 300.0  # a file is read this far at most; a longer one is cut (and counted)
MAX_DECODED_FRAMES = 20_000  # frames decoded at most, whatever rate the file declares
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


def _scaled(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, MAX_FRAME_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _image(frame: Any):
    """One decoded video frame as an RGB ``PIL.Image`` no larger than :data:`MAX_FRAME_SIDE`."""
    width, height = _scaled(frame.width, frame.height)
    return frame.to_image(width=width, height=height)


def decode_file(data: bytes, index: int, *, sample_rate: int | None = None,
                audio_seconds: float | None = None) -> Video:
    """Decode encoded video ``data``: frames by the sampling policy, and (``sample_rate`` given) the audio
    track, at most ``audio_seconds`` of it."""
    import av

    from .inputs import MAX_IMAGE_PIXELS

    with _open(data, index) as container:
        vs = container.streams.video[0]
        width, height = int(vs.codec_context.width or 0), int(vs.codec_context.height or 0)
        if width * height > MAX_IMAGE_PIXELS:
            raise InputError(index, f"video frames are {width}x{height}, over the {MAX_IMAGE_PIXELS} pixel limit")
        duration = _duration(container, vs)
        window = min(duration, MAX_VIDEO_SECONDS) if duration else None
        if duration and duration > MAX_VIDEO_SECONDS:
            truncation.note(VideoTruncationWarning,
                            f"video inputs exceed {MAX_VIDEO_SECONDS:g} s and were cut", 1)
        targets = slots(window)
        end = window if window is not None else targets[-1] + 1 / VIDEO_FPS
        aus = container.streams.audio[0] if sample_rate and container.streams.audio else None
        audio_end = min(end, audio_seconds) if audio_seconds else end
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate) if aus is not None else None
        frames, times, chunks, decoded = [], [], [], 0
        video_done, audio_done = False, aus is None
        try:
            for packet in container.demux(*[s for s in (vs, aus) if s is not None]):
                if packet.stream.index == vs.index and not video_done:
                    for frame in packet.decode():
                        decoded += 1
                        if decoded > MAX_DECODED_FRAMES:
                            raise InputError(index, f"more than {MAX_DECODED_FRAMES} frames before the sampled "
                                                    "ones were found (is the frame rate sane?)")
                        t = float(frame.time) if frame.time is not None else decoded / VIDEO_FPS
                        while len(frames) < len(targets) and t >= targets[len(frames)] - 1e-6:
                            # a frame that covers several slots (a slow video) fills each of them
                            frames.append(frames[-1] if times and times[-1] == t else _image(frame))
                            times.append(t)
                        if len(frames) == len(targets) or t > end:
                            video_done = True
                            break
                elif aus is not None and packet.stream.index == aus.index and not audio_done:
                    for frame in packet.decode():
                        if frame.time is not None and frame.time > audio_end:
                            audio_done = True
                            break
                        chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
                if video_done and audio_done:
                    break
        except av.FFmpegError as err:
            if not frames:
                raise InputError(index, f"cannot decode the video ({type(err).__name__})") from None
    if not frames:
        raise InputError(index, "the video has no frames")
    audio = np.concatenate(chunks)[: int(audio_end * sample_rate)] if chunks else None
    return Video(frames=frames, times=times, audio=audio if audio is not None and audio.size else None)


def _open(data: bytes, index: int) -> Any:
    """``data`` opened as a container FFmpeg reads, with a video stream (else an :class:`InputError`)."""
    import av

    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError) as err:
        raise InputError(index, f"cannot read the video container ({type(err).__name__})") from None
    if not container.streams.video:
        container.close()
        raise InputError(index, "the file has no video stream")
    return container


def probe(data: bytes, index: int) -> None:
    """Check that ``data`` is a container FFmpeg opens with a video stream (what a client checks before
    sending; the server decodes)."""
    _open(data, index).close()


def _duration(container: Any, stream: Any) -> float | None:
    """The video stream's length in seconds, from the stream or else the container (None: not declared)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def decode_frames(item: Any, index: int) -> Video:
    """Frames already in memory (a ``TxHxWxC`` array or a list of images), thinned to :data:`MAX_FRAMES`."""
    from .inputs import decode_image

    if isinstance(item, np.ndarray):
        if item.ndim != 4 or item.shape[-1] not in (1, 3, 4):
            raise InputError(index, f"video frames must be a TxHxWxC array (C 1, 3 or 4), got shape {item.shape}")
        items = list(item)
    else:
        items = list(item)
    if not items:
        raise InputError(index, "video has no frames")
    keep = np.unique(np.linspace(0, len(items) - 1, min(len(items), MAX_FRAMES)).round().astype(int))
    frames = []
    for i in keep:
        img = decode_image(items[i], index, allow_paths=False)
        if max(img.size) > MAX_FRAME_SIDE:
            img = img.resize(_scaled(*img.size))
        frames.append(img)
    return Video(frames=frames, times=[k / VIDEO_FPS for k in range(len(frames))])


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
