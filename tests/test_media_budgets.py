"""Hostile media, generated here (nothing stored): every recipe of the security review against the budgets of
:mod:`zoo.media.budgets`. Each is refused with an ``InputError`` naming its item within seconds and a bounded
memory peak, or, where a budget makes it harmless, decoded to the right answer; good batch-mates keep their
rows. Served, the hostile item fails alone with its index, the good ones get the in-process rows, the model's
stub is not restarted and stays within its memory budget.

Memory is a process's peak resident set over a call: its ``VmHWM`` after resetting it (``/proc/PID/clear_refs``)
minus its ``VmRSS`` before. The budgets stated here:

- :data:`PEAK_MIB` per hostile item in-process, and :data:`STUB_PEAK_MIB` for the stub over a hostile batch
  (unbounded, the recipes cost 244 MiB to 18 GiB);
- :data:`SECONDS` per hostile call (unbounded: 10 s to minutes).
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from fractions import Fraction

import numpy as np
import pytest

import zoo
from serving import contract
from zoo import media
from zoo.data import shapes as S
from zoo.defaults import default_model
from zoo.media import budgets
from zoo.media import sampling as V
from zoo.media.audio import ratio
from zoo.spec import Modality
from zoo.truncation import TruncationWarning

ALIGNED_NAME = default_model("image")  # the offline aligned model: text, image, audio, interleaved and video
PEAK_MIB = 64  # peak RSS growth of one hostile call in-process
SECONDS = 4.0  # wall time of one hostile call (a loaded, shared 2-core machine included)
STUB_PEAK_MIB = 256  # peak RSS growth of the served model's stub over one hostile batch
#: the stub over one request of 16 images of 64 MiB each decoded (1 GiB all at once): one window of decoded
#: items, the image decoding, and slack for the tower and the allocator
WINDOW_PEAK_MIB = (budgets.MAX_HELD_BYTES + budgets.MAX_IMAGE_BYTES) // (1 << 20) + 160


# ---- measuring -------------------------------------------------------------------------------------------
def _status(pid: int | str, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


class Peak:
    """Peak RSS growth (MiB) and wall time of a process (``pid``, default this one) over a ``with`` block."""

    def __init__(self, pid: int | str = "self") -> None:
        self.pid = pid

    def __enter__(self) -> Peak:
        with open(f"/proc/{self.pid}/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        self.base = _status(self.pid, "VmRSS")
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.monotonic() - self.t0
        self.mib = (_status(self.pid, "VmHWM") - self.base) / (1 << 20)

    def show(self, what: str) -> None:
        """One line of what was measured (``pytest -s`` shows them)."""
        print(f"\n[budget] {what}: {self.seconds:.2f} s, peak RSS +{self.mib:.0f} MiB", end="")


# ---- hostile files, made on the fly -------------------------------------------------------------------------
def wav(rate: int, samples: int = 10, hz: float = 440.0) -> bytes:
    """A PCM WAV declaring ``rate`` (10 samples: the 64-byte file of the review)."""
    import soundfile

    t = np.arange(samples) / rate
    wave = 0.3 * np.sin(2 * np.pi * hz * t) + 0.2 * np.sin(2 * np.pi * 3.1 * hz * t) * (t % 0.25 < 0.12)
    buf = io.BytesIO()
    soundfile.write(buf, wave.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def png(side: int | tuple[int, int], mode: str = "1") -> bytes:
    """A blank PNG: 8000 x 8000 in mode "1" is 7.8 KB (and 305 MiB decoded to RGB)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, side if isinstance(side, tuple) else (side, side)).save(buf, "PNG")
    return buf.getvalue()


def progressive_jpeg(size: tuple[int, int], repeat_last_scan: int = 0) -> bytes:
    """A progressive JPEG, its last scan (SOS segment) repeated ``repeat_last_scan`` more times."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (120, 130, 140)).save(buf, "JPEG", progressive=True)
    data = buf.getvalue()
    last = data.rfind(b"\xff\xda")
    return data[:-2] + data[last:-2] * repeat_last_scan + b"\xff\xd9"


SDP = (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
       b"m=video 5004 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n")


def ffconcat(name: str) -> bytes:
    """An ffconcat script reading ``name`` relative to the decoding process's working directory."""
    return f"ffconcat version 1.0\nfile '{name}'\n".encode()


def mkv_flac_at_zero(blocks: int) -> bytes:
    """A Matroska file: 2 video frames (1 s), and a FLAC track of ``blocks`` blocks of 4608 samples at 48 kHz
    (96 ms each), every block stamped 0."""
    import av
    from PIL import Image

    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        v = out.add_stream("ffv1", rate=2)
        v.width = v.height = 16
        v.pix_fmt = "bgr0"
        a = out.add_stream("flac", rate=48000, layout="mono")
        frame = av.VideoFrame.from_image(Image.new("RGB", (16, 16), "red"))
        for i in range(2):
            frame.pts = i
            for p in v.encode(frame):
                out.mux(p)
        for p in v.encode():
            out.mux(p)
        block = av.AudioFrame.from_ndarray(np.zeros((1, 4608), np.int16), format="s16", layout="mono")
        block.sample_rate = 48000
        data = bytes(next(iter([*a.encode(block), *a.encode()])))
        for _ in range(blocks):
            p = av.Packet(data)
            p.stream, p.pts, p.dts, p.time_base = a, 0, 0, a.time_base
            out.mux(p)
    return buf.getvalue()


def mov_png(sizes: list[tuple[int, int]], times: list[float], declared: tuple[int, int] = (64, 64),
            mode: str = "1") -> bytes:
    """A MOV of PNG samples that declares ``declared`` frames: sample i is a blank PNG (``mode``) of ``sizes[i]``
    at ``times[i]`` seconds (each PNG's size is its own, whatever the sample description says)."""
    import av

    rate, cache, buf = 90000, {}, io.BytesIO()
    with av.open(buf, "w", format="mov") as out:
        s = out.add_stream("png", rate=25)
        s.width, s.height = declared
        s.pix_fmt = "rgb24"
        s.time_base = Fraction(1, rate)
        for size, t in zip(sizes, times):
            if size not in cache:
                cache[size] = png(size, mode)
            p = av.Packet(cache[size])
            p.stream, p.pts, p.dts, p.duration, p.time_base = s, round(t * rate), round(t * rate), 1, s.time_base
            out.mux(p)
    return buf.getvalue()


def _scene_png(seed: int) -> bytes:
    buf = io.BytesIO()
    S.render(S.sample_scene(np.random.default_rng(seed)), np.random.default_rng(seed)).save(buf, format="PNG")
    return buf.getvalue()


GOOD = {  # two good batch-mates per modality
    "image": lambda: [_scene_png(1), _scene_png(2)],
    "audio": lambda: [wav(16000, 16000, 300.0), wav(44100, 30000, 600.0)],
    "video": lambda: [V.encode_frames(S.moving_clip("red", "circle", 8), 4),
                      V.encode_frames(S.moving_clip("blue", "star", 6), 4)],
    "text": lambda: ["a red circle", "a blue star"],
    "interleaved": lambda: [["a red circle", _scene_png(3)], [{"text": "a green triangle"}]],
}

#: (id, modality, maker, what the error says (None: the item is accepted), peak MiB allowed)
RECIPES = [
    ("wav-19997Hz-64B", "audio", lambda: wav(19997), None, PEAK_MIB),
    ("wav-96001Hz", "audio", lambda: wav(96001, 96001), None, PEAK_MIB),
    ("wav-rate-out-of-range", "audio", lambda: wav(800, 800), "invalid sample rate 800 Hz", PEAK_MIB),
    ("mkv-flac-blocks-at-ts0", "video", lambda: mkv_flac_at_zero(30_000), None, PEAK_MIB),
    ("png-1bit-8000x8000", "image", lambda: png(8000), "8000x8000, over the 16777216 pixel limit", PEAK_MIB),
    ("png-1bit-just-over-pixels", "image", lambda: png(4200), "over the 16777216 pixel limit", PEAK_MIB),
    ("jpeg-progressive-panorama", "image", lambda: progressive_jpeg((8000, 2000)), "bytes to decode", PEAK_MIB),
    ("jpeg-repeated-last-scan", "image", lambda: progressive_jpeg((1024, 1024), 1000), "1010 scans", PEAK_MIB),
    ("sdp", "video", lambda: SDP, "cannot read the video container: not one of", PEAK_MIB),
    ("mov-frame-grows-mid-stream", "video",
     lambda: mov_png([(64, 64), (16000, 16000)] + [(64, 64)] * 8, [i * 0.5 for i in range(10)]),
     "over the 16777216 pixel limit", PEAK_MIB),
    ("mov-first-frame-huge", "video",  # opening decodes it (to learn the codec): 256 MiB of gray unbounded
     lambda: mov_png([(16000, 16000)] + [(64, 64)] * 8, [i * 0.5 for i in range(9)], mode="L"),
     "over the 16777216 pixel limit", PEAK_MIB),
    ("mov-2000-samples-of-a-big-png", "video",
     lambda: mov_png([(4000, 4000)] * 2000 + [(64, 64)], [i / 90000 for i in range(2000)] + [8.0]),
     "frames hold more than 4294967296 pixels", PEAK_MIB),
    ("text-4MiB", "text", lambda: "lorem ipsum dolor sit amet " * 155_000, None, PEAK_MIB),
    ("interleaved-1000-parts", "interleaved", lambda: ["a"] * 1000, "1000 parts, over the limit of 32", PEAK_MIB),
    ("interleaved-32-big-images", "interleaved", lambda: [png(2048)] * 32, "left of the item's 268435456",
     (budgets.MAX_ITEM_BYTES + budgets.MAX_IMAGE_BYTES) // (1 << 20) + PEAK_MIB),
]


@pytest.fixture(scope="module")
def aligned():
    model = zoo.create(ALIGNED_NAME, device="cpu")
    for modality, make in GOOD.items():  # warm every decoder and tower, so imports do not count as a peak
        model.encode(make(), modality)
    return model


def _same(a, b) -> bool:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))) >= 0.9999


# ---- in-process ------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::zoo.truncation.TruncationWarning")  # the 4 MiB text is cut, and says so
@pytest.mark.parametrize(("name", "modality", "make", "error", "peak_mib"), RECIPES, ids=[r[0] for r in RECIPES])
def test_hostile_item_is_refused_or_harmless(aligned, name, modality, make, error, peak_mib):
    good = GOOD[modality]()
    hostile = make()
    with Peak() as peak:
        got = aligned.encode_per_item([good[0], hostile, good[1]], modality)
    unit = "chars" if modality == "text" else "parts" if isinstance(hostile, list) else "bytes"
    peak.show(f"{name} ({len(hostile)} {unit})")
    assert peak.seconds < SECONDS, f"{name}: {peak.seconds:.1f} s"
    assert peak.mib < peak_mib, f"{name}: peak RSS grew by {peak.mib:.0f} MiB"
    if error is None:
        assert not isinstance(got[1], zoo.InputError), got[1]
        assert _same(got[1], aligned.encode([hostile], modality)[0])
    else:
        assert isinstance(got[1], zoo.InputError) and got[1].index == 1, got[1]
        assert error in got[1].reason, got[1].reason
        assert "/" not in got[1].reason.replace("MP4/MOV", "").replace("Matroska/WebM", "")  # no path is echoed
    want = aligned.encode(good, modality)
    assert _same(got[0], want[0]) and _same(got[2], want[1])


def test_resampling_is_bounded_and_right(aligned):
    """Common rates keep torchaudio's sinc kernel (small terms: a bounded kernel); any other rate goes through
    swresample's fixed filter bank, and sounds the same to the model as the exact resampling by another
    resampler (scipy's polyphase filter with the true ratio 16000/19997)."""
    from scipy.signal import resample_poly

    n = budgets.MAX_RESAMPLE_TERMS
    for orig in (8000, 11025, 22050, 24000, 32000, 44100, 48000, 88200, 96000, 192000):
        for new in (16000, 48000):  # the models' rates
            p, q = ratio(orig, new)
            assert Fraction(p, q) == Fraction(new, orig)
            assert p * (q + 2 * int(np.ceil(6 * q / (0.99 * min(p, q))))) <= n * n + 16 * n  # the kernel bound
    assert ratio(19997, 16000) is None and ratio(96001, 16000) is None
    import soundfile

    from zoo.data import speech as P

    rng = np.random.default_rng(1)
    speech = P.speak("a blue star", P.sample_voice(rng), rng)
    for rate in (19997, 96001, 44100):  # (44100: the established torchaudio path, for comparison)
        recording = resample_poly(speech, rate, P.SAMPLE_RATE)
        recording = (recording + 1e-3 * rng.standard_normal(len(recording))).astype(np.float32)  # a noise floor
        buf = io.BytesIO()
        soundfile.write(buf, recording, rate, format="WAV", subtype="FLOAT")
        with Peak() as peak:
            ours = media.decode_audio(buf.getvalue(), 0, 16000)
        peak.show(f"{rate} Hz speech resampled to 16 kHz")
        assert peak.mib < PEAK_MIB and peak.seconds < SECONDS, (rate, peak.mib, peak.seconds)
        exact = resample_poly(recording, 16000, rate).astype(np.float32)
        assert abs(len(ours) - len(exact)) <= 1
        n = min(len(ours), len(exact))
        assert np.corrcoef(ours[800 : n - 800], exact[800 : n - 800])[0, 1] > 0.9999  # the filters' edges differ
        assert _same(aligned.encode([buf.getvalue()], "audio")[0], aligned.encode([(exact, 16000)], "audio")[0])


def test_a_sound_track_is_counted_in_samples(aligned):
    """Every FLAC block stamped 0: the track is read as far as the model listens, in samples, not to its end."""
    data = mkv_flac_at_zero(30_000)  # 2,880 s of sound in 510 KB
    assert len(data) < 600_000
    with Peak() as peak:
        video = media.decode(data, 0, Modality.VIDEO, aligned.sample_rate, aligned.max_audio_seconds)
    assert peak.seconds < SECONDS and peak.mib < PEAK_MIB
    assert video.audio is not None and len(video.audio) <= aligned.max_audio_seconds * aligned.sample_rate


def test_container_scripts_open_nothing(tmp_path, monkeypatch):
    """ffconcat reads files relative to the working directory and SDP binds UDP ports: neither demuxer is ever
    tried, and the error is the same whether the named file exists or not."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clip.mkv").write_bytes(V.encode_frames(S.moving_clip("red", "circle", 4), 2))
    sockets = len([fd for fd in os.listdir("/proc/self/fd") if "socket" in os.path.realpath(f"/proc/self/fd/{fd}")])
    errors = []
    for data in (ffconcat("clip.mkv"), ffconcat("missing.mkv"), ffconcat(str(tmp_path / "clip.mkv")), SDP):
        for allow_paths in (True, False):
            t0 = time.monotonic()
            with pytest.raises(zoo.InputError) as err:
                media.decode(data, 3, Modality.VIDEO, allow_paths=allow_paths)
            assert time.monotonic() - t0 < 1.0
            errors.append(err.value.reason)
    assert len(set(errors)) == 1 and "clip" not in errors[0] and "missing" not in errors[0], errors
    assert len([fd for fd in os.listdir("/proc/self/fd")
                if "socket" in os.path.realpath(f"/proc/self/fd/{fd}")]) == sockets
    with pytest.raises(zoo.InputError, match="cannot read the video container"):
        media.to_wire(ffconcat("clip.mkv"), 0, Modality.VIDEO)  # a client's check is the same


def test_text_is_cut_before_tokenizing(minilm):
    """A text is cut to 256 tokens x 64 characters before the tokenizer sees it: same vector and token count as
    the tokenizer's own truncation, reported as truncated, and a small bounded cost whatever its length."""
    from serving.triton_model import Request, handle

    huge = "lorem ipsum dolor sit amet " * 155_000  # 4 MiB
    head = huge[:50_000]
    minilm.encode([head], "text")
    with Peak() as peak, pytest.warns(TruncationWarning, match="1 of 1 inputs exceed 256 tokens"):
        got = minilm.encode([huge], "text")
    peak.show("4 MiB text, MiniLM")
    assert peak.mib < PEAK_MIB and peak.seconds < 2.0, (peak.mib, peak.seconds)
    assert np.allclose(got, minilm.encode([head], "text"), atol=1e-6)
    answer = handle(minilm, [Request({"TEXT": [huge.encode()]}, {}, tokens=True)])[0]
    assert answer.tokens.reshape(-1).tolist() == [256]
    assert np.allclose(answer.embedding, got, atol=1e-6)
    # a cut text the tokenizer would not have cut (one long word is one [UNK]) still counts as truncated
    with pytest.warns(TruncationWarning, match="1 of 2 inputs exceed 256 tokens"):
        minilm.encode(["x" * 20_000, "short"], "text")
    assert minilm.max_text_chars == 256 * budgets.TOKENIZE_CHARS_PER_TOKEN


def test_every_item_has_a_deadline(aligned, monkeypatch):
    clip = V.encode_frames(S.moving_clip("red", "circle", 8), 4)
    monkeypatch.setattr(budgets, "MAX_DECODE_SECONDS", 0.0)
    for modality, item in (("video", clip), ("interleaved", ["a", _scene_png(1), "b"])):
        got = aligned.encode_per_item([item], modality)
        assert isinstance(got[0], zoo.InputError) and "decoding took longer than 0 s" in got[0].reason, got[0]


def test_a_batch_is_decoded_a_window_at_a_time(aligned, monkeypatch):
    """12 images of 16 MiB decoded (192 MiB all at once) embedded under a 48 MiB window: at most one window of
    decoded images is alive at a time, and the rows are those of one image alone."""
    monkeypatch.setattr(budgets, "MAX_HELD_BYTES", 48 << 20)
    items = [png(2048)] * 12
    want = aligned.encode(items[:1], "image")[0]
    with Peak() as peak:
        got = aligned.encode(items, "image")
    peak.show("12 images of 16 MiB under a 48 MiB window, in-process")
    assert peak.mib < 48 + 16 + 48, f"peak RSS grew by {peak.mib:.0f} MiB"
    assert all(_same(row, want) for row in got)


def test_large_jpegs_decode_near_the_towers_size():
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4000, 3000), "teal").save(buf, "JPEG")
    assert media.decode_image(buf.getvalue(), 0).size == (2000, 1500)  # 1/2 DCT scale keeps both sides >= 1024


# ---- served ----------------------------------------------------------------------------------------------
def _stub_pid(server, triton_name: str) -> int:
    return next(s.pid for s in server.stubs() if s.model == triton_name)


def _raw_sender(remote, hostile: dict[int, bytes]):
    """``remote.wire_per_item`` that sends the items at ``hostile`` as they are (no local check), so that the
    server is the one that refuses them."""
    real = type(remote).wire_per_item.__get__(remote)

    def wire(items, modality):
        out = real(items, modality)
        for i, data in hostile.items():
            out[i] = data
        return out

    return wire


SERVED = [  # modality, items (the good ones around the hostile ones), indices the server must refuse
    ("audio", lambda g: [g[0], wav(19997, 19997), wav(800, 800), g[1]], {2: "invalid sample rate"}),
    ("image", lambda g: [g[0], png(8000), progressive_jpeg((1024, 1024), 1000), g[1]],
     {1: "pixel limit", 2: "scans"}),
    ("video", lambda g: [g[0], SDP, ffconcat("x.mkv"), mkv_flac_at_zero(30_000),
                         mov_png([(64, 64), (16000, 16000)] + [(64, 64)] * 8, [i * 0.5 for i in range(10)]), g[1]],
     {1: "video container", 2: "video container", 4: "pixel limit"}),
    ("text", lambda g: [g[0], "lorem ipsum dolor sit amet " * 155_000, g[1]], {}),
    ("interleaved", lambda g: [g[0], json.dumps([{"text": "a"}] * 1000).encode(), g[1]], {1: "parts"}),
]


@pytest.mark.server
def test_served_hostile_items_fail_alone(triton, aligned):
    from serving.client import TritonEmbedder

    server, _ = triton
    name = contract.model_name(ALIGNED_NAME)
    pid = _stub_pid(server, name)
    remote = TritonEmbedder(name, server.grpc_url)
    remote.encode(["warm"], "text")
    for modality, make, refused in SERVED:
        items = make(GOOD[modality]())
        raw = {i: items[i] for i in refused}
        if modality == "interleaved":
            items[1] = ["placeholder"]  # the 1000-part JSON goes on the wire as it is
        remote.wire_per_item = _raw_sender(remote, raw)
        with Peak(pid) as peak:
            got = remote.encode_per_item(items, modality)
        peak.show(f"served {modality} batch, the stub")
        assert peak.seconds < 3 * SECONDS, (modality, peak.seconds)
        assert peak.mib < STUB_PEAK_MIB, f"{modality}: the stub's peak RSS grew by {peak.mib:.0f} MiB"
        want = aligned.encode_per_item(items, modality)
        for i, (g, w) in enumerate(zip(got, want)):
            if i in refused:
                assert isinstance(g, zoo.InputError) and g.index == i and refused[i] in g.reason, (modality, i, g)
            else:
                assert not isinstance(g, zoo.InputError), (modality, i, g)
                assert _same(g, w), (modality, i)
    assert _stub_pid(server, name) == pid  # the same stub answered everything: no restart


@pytest.mark.server
def test_served_batch_is_decoded_a_window_at_a_time(triton, aligned):
    """One request of 16 images of 64 MiB each decoded (1 GiB at once) and a concurrent hostile request: the
    stub's peak stays within one window of decoded items, every image gets the in-process row."""
    from serving.client import TritonEmbedder

    server, _ = triton
    name = contract.model_name(ALIGNED_NAME)
    pid = _stub_pid(server, name)
    remote = TritonEmbedder(name, server.grpc_url)
    items = [png(4096)] * 16
    want = aligned.encode(items[:1], "image")[0]
    refused = []

    def hostile():
        other = TritonEmbedder(name, server.grpc_url)
        other.wire_per_item = _raw_sender(other, {0: png(8000)})
        refused.append(other.encode_per_item([b"x"], "image")[0])

    with Peak(pid) as peak:
        side = threading.Thread(target=hostile)
        side.start()
        got = remote.encode(items, "image")
        side.join(60)
    peak.show("served request of 16 images of 64 MiB decoded, the stub")
    assert peak.mib < WINDOW_PEAK_MIB, f"the stub's peak RSS grew by {peak.mib:.0f} MiB"
    assert all(_same(row, want) for row in got)
    assert isinstance(refused[0], zoo.InputError) and "pixel limit" in refused[0].reason
    assert _stub_pid(server, name) == pid
