"""The demo corpus: files in one folder (the only folder, with uploads, that Gradio may serve).

Default content, all offline: the photos shipped in scikit-image, generated shape scenes with their captions,
generated clips of moving shapes, the sounds shipped with pygame, spoken captions (when espeak-ng is
installed), and text snippets.
Page users add files by upload; the operator imports server folders with ``--corpus DIR``. Both copy
into the corpus folder, within limits.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from zoo.errors import InputError, InvalidArgumentError
from zoo.spec import Modality

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}
AUDIO_EXT = {".wav", ".flac", ".ogg", ".mp3"}
TEXT_EXT = {".txt"}
VIDEO_EXT = {".mp4", ".mkv", ".webm", ".mov", ".avi"}
#: the generated clips of the default corpus: one shape each, moving across the frame
CLIPS = (("red", "circle"), ("blue", "star"), ("green", "triangle"), ("yellow", "square"), ("purple", "circle"),
         ("orange", "star"))
MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # per file
MAX_UPLOAD_FILES = 50  # per upload or folder import
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "page", "horse",
                  "immunohistochemistry", "hubble_deep_field", "retina", "cat")
SNIPPETS = (
    "an astronaut in a white space suit", "a cup of coffee on a saucer", "a tabby cat looking at the camera",
    "a rocket on the launch pad", "a man holding a camera", "a handful of old coins", "the surface of the moon",
    "a page of printed text", "a horse silhouette", "a car door slamming", "a loud explosion", "a punch sound",
    "a whoosh of air", "a red circle", "two blue squares", "a yellow star on a dark background",
)


@dataclass(frozen=True)
class Item:
    """One corpus entry: a file (image/audio) or a text; ``label`` is what the page shows."""

    id: str
    modality: str  # zoo Modality value
    label: str
    path: str | None = None  # relative to the corpus folder
    text: str | None = None


class Corpus:
    """Items stored under ``root`` with a manifest (``items.jsonl``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest = self.root / "items.jsonl"
        self.items: list[Item] = []
        if self.manifest.is_file():
            self.items = [Item(**json.loads(line)) for line in self.manifest.read_text().splitlines() if line]
        self.by_id: dict[str, Item] = {i.id: i for i in self.items}  # items are only ever appended

    def file(self, item: Item) -> Path:
        """Absolute path of a file item."""
        return self.root / item.path

    def _add(self, item: Item) -> Item:
        if item.id in self.by_id:
            return item
        self.items.append(item)
        self.by_id[item.id] = item
        with open(self.manifest, "a") as fh:
            fh.write(json.dumps(asdict(item)) + "\n")
        return item

    def add_text(self, text: str, label: str | None = None) -> Item:
        """Add a text snippet."""
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        return self._add(Item(f"text-{digest}", Modality.TEXT.value, label or text, text=text))

    def add_file(self, src: Path, label: str | None = None) -> Item:
        """Copy a file into the corpus after checking its type, size and that it decodes."""
        src = Path(src)
        ext = src.suffix.lower()
        if ext in TEXT_EXT:
            return self.add_text(src.read_text(errors="replace").strip()[:2000], label or src.name)
        if ext in IMAGE_EXT:
            modality = Modality.IMAGE
        elif ext in AUDIO_EXT:
            modality = Modality.AUDIO
        elif ext in VIDEO_EXT:
            modality = Modality.VIDEO
        else:
            raise InvalidArgumentError(f"{src.name}: unsupported file type {ext or '(none)'}; use images "
                                       f"({', '.join(sorted(IMAGE_EXT))}), audio ({', '.join(sorted(AUDIO_EXT))}) "
                                       f"or video ({', '.join(sorted(VIDEO_EXT))})")
        size = src.stat().st_size
        if size > MAX_UPLOAD_BYTES:
            raise InvalidArgumentError(f"{src.name}: {size} bytes is over the {MAX_UPLOAD_BYTES} byte limit")
        data = src.read_bytes()
        _check_decodes(data, modality, src.name)
        digest = hashlib.sha256(data).hexdigest()[:12]
        dest = Path(modality.value) / f"{digest}{ext}"
        (self.root / dest).parent.mkdir(parents=True, exist_ok=True)
        (self.root / dest).write_bytes(data)
        return self._add(Item(f"{modality.value}-{digest}", modality.value, label or src.name, path=str(dest)))

    def add_files(self, paths: list[Path]) -> tuple[list[Item], list[str]]:
        """Add several files; returns what was added and one message per rejected file."""
        if len(paths) > MAX_UPLOAD_FILES:
            raise InvalidArgumentError(f"{len(paths)} files at once is over the limit of {MAX_UPLOAD_FILES}")
        added, errors = [], []
        for p in paths:
            try:
                added.append(self.add_file(Path(p)))
            except (InvalidArgumentError, InputError, OSError) as err:
                errors.append(str(err))
        return added, errors

    def add_folder(self, folder: Path) -> tuple[list[Item], list[str]]:
        """Copy the supported files of a folder (not recursive) into the corpus."""
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise InvalidArgumentError(f"not a folder: {folder}")
        kinds = IMAGE_EXT | AUDIO_EXT | VIDEO_EXT | TEXT_EXT
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in kinds)
        return self.add_files(files[:MAX_UPLOAD_FILES])


def _check_decodes(data: bytes, modality: Modality, name: str) -> None:
    from zoo import inputs

    try:
        inputs.to_wire(data, 0, modality)  # the same check a client makes before sending a file
    except InputError as err:
        raise InvalidArgumentError(f"{name}: {err.reason}") from None


def build_default(root: Path, *, scenes: int = 48, spoken: int = 8, seed: int = 11) -> Corpus:
    """Create the default offline corpus under ``root`` (idempotent)."""
    import tempfile

    from zoo.data import shapes as S

    corpus = Corpus(root)
    if corpus.items:
        return corpus
    tmp = Path(tempfile.mkdtemp(prefix="zoo-corpus-"))
    try:
        for name in SKIMAGE_PHOTOS:
            try:
                import skimage.data
                from PIL import Image

                arr = getattr(skimage.data, name)()
            except Exception:  # a photo that needs a download is simply left out
                continue
            if arr.dtype != np.uint8:
                arr = (arr.astype(np.float32) / max(float(arr.max()), 1) * 255).astype(np.uint8)
            Image.fromarray(arr).convert("RGB").save(tmp / f"{name}.png")
            corpus.add_file(tmp / f"{name}.png", label=f"photo: {name}")
        rng = np.random.default_rng(seed)
        gallery = S.single_object_gallery(rng, S.HELDOUT_RENDER)
        extra = [S.sample_training_scene(rng) for _ in range(max(0, scenes - len(gallery)))]
        for i, scene in enumerate((gallery + extra)[:scenes]):
            path = tmp / f"scene_{i:03d}.png"
            S.render(scene, rng, S.HELDOUT_RENDER).save(path)
            caption = S.captions(scene, S.EVAL_TEMPLATES if len(scene.objects) == 1 else S.TRAIN_TEMPLATES)[0]
            corpus.add_file(path, label=caption)
            corpus.add_text(caption)
        _add_clips(corpus, tmp)
        _add_pygame_sounds(corpus)
        _add_spoken(corpus, tmp, rng, spoken)
        for text in SNIPPETS:
            corpus.add_text(text)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return corpus


def _add_clips(corpus: Corpus, tmp: Path) -> None:
    from zoo.data import shapes as S
    from zoo.video import encode_frames

    for color, shape in CLIPS:
        path = tmp / f"clip_{color}_{shape}.mp4"
        path.write_bytes(encode_frames(S.moving_clip(color, shape, 16), 8, lossless=False))
        article = "an" if color[0] in "aeiou" else "a"
        corpus.add_file(path, label=f"clip: {article} {color} {shape} moving")


def _add_pygame_sounds(corpus: Corpus) -> None:
    import importlib.util

    spec = importlib.util.find_spec("pygame")
    if spec is None or not spec.submodule_search_locations:
        return
    data = Path(next(iter(spec.submodule_search_locations))) / "examples" / "data"
    for path in sorted(data.glob("*.wav")) + sorted(data.glob("*.ogg")):
        try:
            corpus.add_file(path, label=f"sound: {path.stem.replace('_', ' ')}")
        except InvalidArgumentError:
            continue


def _add_spoken(corpus: Corpus, tmp: Path, rng: np.random.Generator, n: int) -> None:
    from zoo.data import shapes as S
    from zoo.data import speech as P

    if not P.espeak_available():
        return
    for i in range(n):
        scene = S.sample_scene(rng, 1)
        text = S.captions(scene, S.EVAL_TEMPLATES)[0]
        path = tmp / f"spoken_{i:02d}.wav"
        path.write_bytes(P.wav_bytes(P.speak(text, P.sample_voice(rng, P.HELDOUT_VOICES), rng)))
        corpus.add_file(path, label=f"spoken: {text}")
