"""Video files decoded with PyAV (FFmpeg's libraries) under the sampling policy of :mod:`zoo.media.sampling`.

FFmpeg never guesses the container: the file's first bytes choose a demuxer from ``VIDEO_CONTAINERS`` (MP4/MOV,
Matroska/WebM, AVI, Ogg, MPEG-TS), so the demuxers that open sockets or other files (SDP, ffconcat, HLS, image
sequences …) are never tried; no protocol is allowed either (``protocol_whitelist=none``: a demuxer cannot open
a URL or a file by name), and FFmpeg's blocking calls have open and read timeouts.

While decoding, every frame's real size is bounded (``max_pixels`` on the decoder, which refuses a frame that
grows mid-stream before allocating it, and a check of each decoded frame), the frames decoded and their pixels
are counted against ``MAX_DECODED_FRAMES`` and ``MAX_VIDEO_PIXELS``, the sound track is counted in samples
after resampling (never by its timestamps), and the item's wall-clock deadline is checked at every packet.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from .. import truncation
from ..errors import InputError
from . import budgets as B
from . import sampling as policy
from .audio import check_rate
from .deadline import Deadline, deadline_for

CONTAINER_NAMES = {"mov": "MP4/MOV", "matroska": "Matroska/WebM", "avi": "AVI", "ogg": "Ogg", "mpegts": "MPEG-TS"}
_MOV_ATOMS = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot")  # what an ISO/QuickTime file opens with
_TS_PACKET = 188


def container_of(data: bytes) -> str | None:
    """The demuxer for ``data``, from its first bytes (None: not a container of ``VIDEO_CONTAINERS``)."""
    if data[4:8] in _MOV_ATOMS:
        name = "mov"
    elif data[:4] == b"\x1a\x45\xdf\xa3":  # EBML
        name = "matroska"
    elif data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        name = "avi"
    elif data[:4] == b"OggS":
        name = "ogg"
    elif data[:1] == b"\x47" and all(data[i] == 0x47 for i in range(0, min(len(data), 4 * _TS_PACKET), _TS_PACKET)):
        name = "mpegts"
    else:
        return None
    return name if name in B.VIDEO_CONTAINERS else None


def _is_audio_file(data: bytes) -> bool:
    """Whether ``data`` looks like an audio-only file (WAV, FLAC, MP3), to say so rather than "not a container"."""
    return (data[:4] == b"RIFF" and data[8:12] == b"WAVE") or data[:4] == b"fLaC" or data[:3] == b"ID3"


def open_container(data: bytes, index: int, deadline: Deadline | None = None) -> Any:
    """``data`` opened with its allow-listed demuxer, with a video stream (else an :class:`InputError`, the same
    text whatever the bytes name: nothing outside them is ever opened)."""
    import av

    deadline = deadline_for(index, deadline)
    fmt = container_of(data)
    if fmt is None:
        if _is_audio_file(data):
            raise InputError(index, "the file has no video stream")
        raise InputError(index, "cannot read the video container: not one of "
                                f"{', '.join(CONTAINER_NAMES[c] for c in B.VIDEO_CONTAINERS)}")
    try:
        # max_pixels for the streams too: opening decodes a few frames to learn the codec's parameters
        container = av.open(io.BytesIO(data), mode="r", format=fmt, options={"max_pixels": str(B.MAX_IMAGE_PIXELS)},
                            container_options={"protocol_whitelist": "none"},
                            timeout=(min(B.FFMPEG_OPEN_TIMEOUT_S, deadline.left()), B.FFMPEG_READ_TIMEOUT_S))
    except av.ExitError:
        raise InputError(index, "cannot read the video container (it took too long)") from None
    except (av.FFmpegError, ValueError) as err:
        raise InputError(index, f"cannot read the video container ({type(err).__name__})") from None
    if not container.streams.video:
        container.close()
        raise InputError(index, "the file has no video stream")
    return container


def probe(data: bytes, index: int) -> None:
    """Check that ``data`` is a container zoo reads with a video stream (what a client checks before sending;
    the server decodes)."""
    open_container(data, index).close()


def _duration(container: Any, stream: Any) -> float | None:
    """The video stream's length in seconds, from the stream or else the container (None: not declared)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _image(frame: Any, scaled: Any):
    """One decoded video frame as an RGB ``PIL.Image`` no larger than the policy's frame side."""
    width, height = scaled(frame.width, frame.height)
    return frame.to_image(width=width, height=height)


class _Budget:
    """What one video item's decoding has spent: frames, pixels (each frame's real size), time."""

    def __init__(self, index: int, deadline: Deadline) -> None:
        self.index, self.deadline, self.frames, self.pixels = index, deadline, 0, 0

    def frame(self, frame: Any) -> None:
        self.frames += 1
        if self.frames > B.MAX_DECODED_FRAMES:
            raise InputError(self.index, f"more than {B.MAX_DECODED_FRAMES} frames before the sampled ones were "
                                         "found (is the frame rate sane?)")
        size = frame.width * frame.height
        if size > B.MAX_IMAGE_PIXELS:
            raise InputError(self.index, f"a video frame is {frame.width}x{frame.height}, over the "
                                         f"{B.MAX_IMAGE_PIXELS} pixel limit")
        self.pixels += size
        if self.pixels > B.MAX_VIDEO_PIXELS:
            raise InputError(self.index, f"the video's frames hold more than {B.MAX_VIDEO_PIXELS} pixels before the "
                                         "sampled ones were found")


def decode_file(data: bytes, index: int, *, sample_rate: int | None = None, audio_seconds: float | None = None,
                deadline: Deadline | None = None):
    """Decode encoded video ``data`` to a :class:`zoo.media.sampling.Video`: frames by the sampling policy, and
    (``sample_rate`` given) the sound track, at most ``audio_seconds`` of it, counted in samples."""
    import av

    deadline = deadline_for(index, deadline)
    spent = _Budget(index, deadline)
    with open_container(data, index, deadline) as container:
        vs = container.streams.video[0]
        width, height = int(vs.codec_context.width or 0), int(vs.codec_context.height or 0)
        if width * height > B.MAX_IMAGE_PIXELS:
            raise InputError(index, f"video frames are {width}x{height}, over the {B.MAX_IMAGE_PIXELS} pixel limit")
        # the declared size says nothing of the frames: the decoder refuses any frame over the limit before
        # allocating it (a frame that grows mid-stream included)
        vs.codec_context.options = {"max_pixels": str(B.MAX_IMAGE_PIXELS)}
        duration = _duration(container, vs)
        window = min(duration, policy.MAX_VIDEO_SECONDS) if duration else None
        if duration and duration > policy.MAX_VIDEO_SECONDS:
            truncation.note(policy.VideoTruncationWarning,
                            f"video inputs exceed {policy.MAX_VIDEO_SECONDS:g} s and were cut", 1)
        targets = policy.slots(window)
        end = window if window is not None else targets[-1] + 1 / policy.VIDEO_FPS
        aus = container.streams.audio[0] if sample_rate and container.streams.audio else None
        if aus is not None:
            check_rate(int(aus.codec_context.sample_rate or 0), index)
        audio_end = min(end, audio_seconds) if audio_seconds else end
        audio_need = int(audio_end * sample_rate) if aus is not None else 0  # samples at the model's rate
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate) if aus is not None else None
        frames, times, chunks, heard = [], [], [], 0
        video_done, audio_done = False, aus is None
        try:
            for packet in container.demux(*[s for s in (vs, aus) if s is not None]):
                deadline.check()
                if packet.stream.index == vs.index and not video_done:
                    for frame in packet.decode():
                        spent.frame(frame)
                        t = float(frame.time) if frame.time is not None else spent.frames / policy.VIDEO_FPS
                        while len(frames) < len(targets) and t >= targets[len(frames)] - 1e-6:
                            # a frame that covers several slots (a slow video) fills each of them
                            frames.append(frames[-1] if times and times[-1] == t else _image(frame, policy.frame_size))
                            times.append(t)
                        if len(frames) == len(targets) or t > end:
                            video_done = True
                            break
                elif aus is not None and packet.stream.index == aus.index and not audio_done:
                    for frame in packet.decode():
                        # counted in samples: a track whose timestamps stand still is still read only this far
                        if (frame.time is not None and frame.time > audio_end) or heard >= audio_need:
                            audio_done = True
                            break
                        for f in resampler.resample(frame):
                            chunks.append(f.to_ndarray().reshape(-1))
                            heard += len(chunks[-1])
                if video_done and audio_done:
                    break
        except av.ExitError:
            raise InputError(index, "cannot decode the video (FFmpeg took too long)") from None
        except (av.ArgumentError, av.MemoryError):  # what a frame over max_pixels gives, mid-stream or not
            raise InputError(index, f"cannot decode the video: a frame is over the {B.MAX_IMAGE_PIXELS} pixel limit "
                                    "or the stream is invalid") from None
        except av.FFmpegError as err:  # a damaged tail: the frames found so far are the video
            if not frames and not width * height:  # opening could not learn the size within max_pixels either
                raise InputError(index, f"cannot decode the video: no frame within the {B.MAX_IMAGE_PIXELS} pixel "
                                        "limit, or an invalid stream") from None
            if not frames:
                raise InputError(index, f"cannot decode the video ({type(err).__name__})") from None
    if not frames:
        raise InputError(index, "the video has no frames")
    audio = np.concatenate(chunks)[:audio_need] if chunks else None
    return policy.Video(frames=frames, times=times, audio=audio if audio is not None and audio.size else None)


def decode_frames(item: Any, index: int):
    """Frames already in memory (a ``TxHxWxC`` array or a list of images), thinned to the policy's frame count."""
    from .image import decode_image

    if isinstance(item, np.ndarray):
        if item.ndim != 4 or item.shape[-1] not in (1, 3, 4):
            raise InputError(index, f"video frames must be a TxHxWxC array (C 1, 3 or 4), got shape {item.shape}")
    items = list(item)
    if not items:
        raise InputError(index, "video has no frames")
    keep = np.unique(np.linspace(0, len(items) - 1, min(len(items), policy.MAX_FRAMES)).round().astype(int))
    frames = []
    for i in keep:
        img = decode_image(items[i], index, allow_paths=False)
        if max(img.size) > policy.MAX_FRAME_SIDE:
            img = img.resize(policy.frame_size(*img.size))
        frames.append(img)
    return policy.Video(frames=frames, times=[k / policy.VIDEO_FPS for k in range(len(frames))])


def frames_in_memory(item: Any) -> bool:
    """Whether a video item is frames already decoded (an array, or a list of images), not a file."""
    return isinstance(item, (np.ndarray, list, tuple))


def decode_video(item: Any, index: int, sample_rate: int = 0, max_seconds: float | None = None,
                 allow_paths: bool = True, *, deadline: Deadline | None = None):
    """A video item (file bytes, a path, a ``data:`` URI, or frames in memory) as a :class:`zoo.media.sampling.Video`;
    ``sample_rate`` > 0 also reads its sound track (at most ``max_seconds`` of it) for models that listen."""
    from .source import file_bytes

    if frames_in_memory(item):
        return decode_frames(item, index)
    data = file_bytes(item, index, "video", allow_paths)
    if data is None:
        raise InputError(index, f"unsupported video input type {type(item).__name__}")
    return decode_file(data, index, sample_rate=sample_rate or None, audio_seconds=max_seconds, deadline=deadline)


def nbytes(video: Any) -> int:
    """Bytes a decoded video holds: its kept frames (RGB, 4 bytes a pixel in Pillow) and its sound track."""
    return sum(f.width * f.height * 4 for f in video.frames) + (0 if video.audio is None else video.audio.nbytes)
