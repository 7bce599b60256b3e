"""Video as a modality: decoding and its bounds, the sampling policy, and the offline aligned model's video
path retrieving what a generated clip shows."""

import numpy as np
import pytest

import zoo
from zoo import media
from zoo.data import shapes as S
from zoo.data import speech as P
from zoo.media import budgets
from zoo.media import sampling as V
from zoo.postprocess import normalize

CAPTIONS = [f"a {color} {shape}" for shape in S.SHAPES for color in S.COLORS]  # the 32 colour × shape captions


@pytest.fixture(scope="module")
def aligned():
    return zoo.create("zoo/shapes-aligned-minilm", device="cpu")


@pytest.mark.parametrize("lossless", [False, True], ids=["mpeg4-mp4", "ffv1-mkv"])
def test_a_moving_red_circle_retrieves_a_red_circle(aligned, lossless):
    """A generated clip of a red circle gliding across the frame, encoded as a real video file, finds "a red
    circle" first among the 32 colour × shape captions; so does every other clip of the demo corpus."""
    captions = aligned.encode(CAPTIONS, "text")
    for color, shape in [("red", "circle"), ("blue", "star"), ("green", "triangle"), ("yellow", "square")]:
        clip = V.encode_frames(S.moving_clip(color, shape, 24), 8, lossless=lossless)
        top = CAPTIONS[int(np.argmax(aligned.encode([clip], "video") @ captions.T))]
        assert top == f"a {color} {shape}", (color, shape, top)


def test_video_is_the_mean_of_its_frames_plus_its_sound_track(aligned):
    """The documented fusion: mean of normalized frame embeddings, normalized, plus the normalized sound-track
    embedding; a spoken caption in the track pulls the clip toward what is said."""
    rng = np.random.default_rng(0)
    frames = S.moving_clip("red", "circle", 12)
    speech = P.speak("a blue star", P.sample_voice(rng), rng)
    clip = V.encode_frames(frames, 4, audio=speech, sample_rate=P.SAMPLE_RATE)
    decoded = media.decode(clip, 0, zoo.Modality.VIDEO, aligned.sample_rate, aligned.max_audio_seconds)
    assert decoded.audio is not None and abs(len(decoded.audio) - len(speech)) < 0.05 * P.SAMPLE_RATE
    sight = normalize(normalize(aligned.encode(decoded.frames, "image", normalize=False)).mean(0, keepdims=True))
    heard = normalize(aligned.embed_audio([decoded.audio]))
    want = normalize(sight + heard)
    got = aligned.encode([clip], "video")
    assert np.allclose(got, want, atol=1e-5)
    silent = aligned.encode([V.encode_frames(frames, 4)], "video")
    blue_star = aligned.encode(["a blue star"], "text")
    assert float(got @ blue_star.T) > float(silent @ blue_star.T)


def test_sampling_policy():
    """2 frames per second of video, at most 16 spread over the window; frames in memory count as sampled."""
    assert V.slots(3.0) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    long = V.slots(60.0)
    assert len(long) == V.MAX_FRAMES and long[0] == 0 and long[-1] == pytest.approx(60 * 15 / 16)
    assert V.slots(0.2) == [0.0]
    clip = V.encode_frames(S.moving_clip("red", "circle", 40), 10)  # 4 s at 10 fps
    video = media.decode(clip, 0, zoo.Modality.VIDEO)
    assert video.times == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]) and video.fps == pytest.approx(2)
    big = np.zeros((40, 1000, 1600, 3), np.uint8)
    thinned = media.decode(big, 0, zoo.Modality.VIDEO)
    assert len(thinned.frames) == V.MAX_FRAMES and max(thinned.frames[0].size) == V.MAX_FRAME_SIDE


def test_bounds_hold_before_allocation(monkeypatch):
    """A declared frame size over the pixel limit is refused before a frame is decoded; a file longer than the
    window is cut with one warning per call; decoding stops at the frame budget; a file with sound but no
    picture is named as such."""
    clip = V.encode_frames(S.moving_clip("red", "circle", 8), 4)
    monkeypatch.setattr(budgets, "MAX_IMAGE_PIXELS", 100)
    # (the decoder's max_pixels already refuses the frames while the file is opened and probed)
    with pytest.raises(zoo.InputError, match=r"input 0: .*\b100 pixel limit"):
        media.decode(clip, 0, zoo.Modality.VIDEO)
    monkeypatch.undo()
    monkeypatch.setattr(V, "MAX_VIDEO_SECONDS", 1.0)
    model = zoo.create("zoo/shapes-aligned-minilm", device="cpu")
    with pytest.warns(V.VideoTruncationWarning, match="2 of 2 video inputs exceed 1 s"):
        model.encode([clip, clip], "video")
    assert media.decode(clip, 0, zoo.Modality.VIDEO).times == [0.0, 0.5]
    monkeypatch.undo()
    monkeypatch.setattr(budgets, "MAX_DECODED_FRAMES", 3)
    with pytest.raises(zoo.InputError, match="more than 3 frames"):
        media.decode(V.encode_frames(S.moving_clip("red", "circle", 40), 10), 0, zoo.Modality.VIDEO)
    wav = P.wav_bytes(np.zeros(16000, np.float32))
    with pytest.raises(zoo.InputError, match="input 0: the file has no video stream"):
        media.decode(wav, 0, zoo.Modality.VIDEO)


def test_servers_take_video_as_data_never_as_a_path(tmp_path):
    path = tmp_path / "clip.mkv"
    path.write_bytes(V.encode_frames(S.moving_clip("red", "circle", 4), 2))
    with pytest.raises(zoo.InputError, match="file paths are not accepted"):
        media.decode(str(path), 0, zoo.Modality.VIDEO, allow_paths=False)
    assert len(media.decode(path.read_bytes(), 0, zoo.Modality.VIDEO, allow_paths=False).frames) == 4
