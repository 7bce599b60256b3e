"""The demo corpus: files in one folder (the only folder, with uploads, that Gradio may serve).

The default content is built offline by :mod:`ui.default_corpus`; Gradio's upload folder is kept tidy by
:mod:`ui.uploads`.
Page users add files by upload; the operator imports server folders with ``--corpus DIR``. Both copy
into the corpus folder, within limits: a file must decode the way a model decodes it (``zoo.media.decode``,
not only a container probe) to get in, and what page users and the operator add shares one quota
(:data:`MAX_CORPUS_BYTES`, :data:`MAX_CORPUS_ITEMS`).

The manifest (``items.jsonl``) is append-only: one line per item, and one ``{"quarantined": id, "reason": …}``
line per item a model failed on when it was indexed. A quarantined item is listed, not indexed nor searched;
its file moves out of the served folder, to ``<corpus>-quarantine/`` beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from zoo.errors import InputError, InvalidArgumentError
from zoo.spec import Modality

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}
AUDIO_EXT = {".wav", ".flac", ".ogg", ".mp3"}
TEXT_EXT = {".txt"}
VIDEO_EXT = {".mp4", ".mkv", ".webm", ".mov", ".avi"}
MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # per file
MAX_UPLOAD_FILES = 50  # per upload or folder import
MAX_CORPUS_BYTES = 512 * 1024 * 1024  # every uploaded and imported item together (quarantined ones too)
MAX_CORPUS_ITEMS = 2000  # uploaded and imported items together (quarantined ones too)
ADDED_SOURCES = ("upload", "import")  # items that count against the quota (the default corpus does not)
VALIDATE_SAMPLE_RATE = 16_000  # audio (and a video's sound) is decoded at this rate to check a new file
MAX_TEXT_CHARS = 2000  # a .txt file's first characters become the item


@dataclass(frozen=True)
class Item:
    """One corpus entry: a file (image/audio/video) or a text; ``label`` is what the page shows; ``source``:
    None for the default corpus, ``"upload"`` (a page user's) or ``"import"`` (the operator's ``--corpus``)."""

    id: str
    modality: str  # zoo Modality value
    label: str
    path: str | None = None  # relative to the corpus folder
    text: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class Quarantined:
    """An item a model failed on when indexing it, and why (the reason names no server folder)."""

    item: Item
    reason: str


class Corpus:
    """Items stored under ``root`` with a manifest (``items.jsonl``); thread-safe.

    ``items`` and ``by_id`` hold the searchable items (never the quarantined ones, see :meth:`quarantine`);
    both are replaced, never changed in place, so a reader's copy stays consistent. ``version`` counts the
    changes (an index re-checks the corpus when it moves)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.quarantine_root = self.root.parent / f"{self.root.name}-quarantine"  # outside the served folder
        self.manifest = self.root / "items.jsonl"
        self._lock = threading.RLock()
        self.version = 0
        self.quarantined: dict[str, Quarantined] = {}
        every: dict[str, Item] = {}
        if self.manifest.is_file():
            for n, line in enumerate(self.manifest.read_text(errors="replace").splitlines(), 1):
                if not line.strip():
                    continue
                try:  # a line cut short (a crash while appending) or not ours is skipped, never fatal
                    record = json.loads(line)
                    if "quarantined" in record:
                        key = str(record["quarantined"])
                        if key in every:
                            self.quarantined[key] = Quarantined(every[key], str(record.get("reason", "")))
                        continue
                    item = Item(**record)
                except (ValueError, TypeError) as err:
                    print(f"corpus manifest line {n} skipped: {type(err).__name__}", file=sys.stderr)
                    continue
                every.setdefault(item.id, item)
        self.items: list[Item] = [i for i in every.values() if i.id not in self.quarantined]
        self.by_id: dict[str, Item] = {i.id: i for i in self.items}
        added = [i for i in every.values() if i.source in ADDED_SOURCES]
        self.added_items = len(added)  # what counts against the quota, quarantined items included
        self.added_bytes = sum(self._stored_bytes(i) for i in added)

    # ---- reading -------------------------------------------------------------------------------
    def file(self, item: Item) -> Path:
        """Absolute path of a file item."""
        return self.root / item.path

    def _stored_bytes(self, item: Item) -> int:
        if item.path is None:
            return len((item.text or "").encode())
        where = self.quarantine_root if item.id in self.quarantined else self.root
        try:
            return (where / item.path).stat().st_size
        except OSError:
            return 0

    def quarantine_summary(self) -> str:
        """What the page says about quarantined items (labels and reasons, no server paths); "" if none."""
        entries = list(self.quarantined.values())
        if not entries:
            return ""
        lines = [f"**{len(entries)} item{'s' if len(entries) != 1 else ''} quarantined** (not indexed):"]
        lines += [f"- {q.item.label}: {q.reason}" for q in entries[-20:]]
        if len(entries) > 20:
            lines.append(f"- … and {len(entries) - 20} more")
        return "\n".join(lines)

    # ---- changing ------------------------------------------------------------------------------
    def _append(self, record: dict) -> None:
        with open(self.manifest, "ab") as fh:
            line = json.dumps(record).encode() + b"\n"
            if fh.tell() and _last_byte(self.manifest) != b"\n":  # a line cut short stays alone on its line
                line = b"\n" + line
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def _add(self, item: Item, size: int = 0, data: bytes | None = None) -> Item:
        """Store ``item`` (its file's ``data`` first, atomically) unless it is there already; ``size`` counts
        against the quota when the item is uploaded or imported."""
        with self._lock:
            if item.id in self.by_id:
                return self.by_id[item.id]
            if item.id in self.quarantined:
                raise InvalidArgumentError(f"{item.label}: was quarantined before ({self.quarantined[item.id].reason})")
            counted = item.source in ADDED_SOURCES
            if counted:
                _check_quota(item.label, size, self.added_bytes, self.added_items)
            if data is not None:
                _write_atomically(self.root / item.path, data)
            self._append({k: v for k, v in asdict(item).items() if v is not None})
            self.items = [*self.items, item]
            self.by_id = {**self.by_id, item.id: item}
            if counted:
                self.added_items += 1
                self.added_bytes += size
            self.version += 1
            return item

    def add_text(self, text: str, label: str | None = None, source: str | None = None) -> Item:
        """Add a text snippet."""
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        return self._add(Item(f"text-{digest}", Modality.TEXT.value, label or text, text=text, source=source),
                         len(text.encode()))

    def add_file(self, src: Path, label: str | None = None, source: str | None = None) -> Item:
        """Copy a file into the corpus after checking its type, its size, the quota and that it decodes as a
        model decodes it (``zoo.media.decode``: every frame a model samples, the audio it listens to)."""
        src = Path(src)
        ext = src.suffix.lower()
        if ext in IMAGE_EXT:
            modality = Modality.IMAGE
        elif ext in AUDIO_EXT:
            modality = Modality.AUDIO
        elif ext in VIDEO_EXT:
            modality = Modality.VIDEO
        elif ext not in TEXT_EXT:
            raise InvalidArgumentError(f"{src.name}: unsupported file type {ext or '(none)'}; use images "
                                       f"({', '.join(sorted(IMAGE_EXT))}), audio ({', '.join(sorted(AUDIO_EXT))}), "
                                       f"video ({', '.join(sorted(VIDEO_EXT))}) or text (.txt)")
        size = src.stat().st_size
        if size > MAX_UPLOAD_BYTES:
            raise InvalidArgumentError(f"{src.name}: {size} bytes is over the {MAX_UPLOAD_BYTES} byte limit")
        if ext in TEXT_EXT:
            text = src.read_text(errors="replace").strip()[:MAX_TEXT_CHARS]
            return self.add_text(text, label or src.name, source)
        data = src.read_bytes()
        digest = hashlib.sha256(data).hexdigest()[:12]
        item = Item(f"{modality.value}-{digest}", modality.value, label or src.name,
                    path=str(Path(modality.value) / f"{digest}{ext}"), source=source)
        if item.id in self.by_id:  # the same file again: nothing to check, nothing to count
            return self.by_id[item.id]
        if item.id in self.quarantined:
            raise InvalidArgumentError(f"{src.name}: was quarantined before ({self.quarantined[item.id].reason})")
        if source in ADDED_SOURCES:  # fail fast, before decoding; checked again when it is stored
            _check_quota(item.label, size, self.added_bytes, self.added_items)
        check_decodes(data, modality, src.name)
        return self._add(item, size, data)

    def add_files(self, paths: list[Path], source: str | None = "upload") -> tuple[list[Item], list[str]]:
        """Add several files; returns what was added and one message per rejected file."""
        if len(paths) > MAX_UPLOAD_FILES:
            raise InvalidArgumentError(f"{len(paths)} files at once is over the limit of {MAX_UPLOAD_FILES}")
        added, errors = [], []
        for p in paths:
            try:
                added.append(self.add_file(Path(p), source=source))
            except (InvalidArgumentError, InputError, OSError) as err:
                errors.append(self.scrub(str(err)) if not isinstance(err, OSError) else
                              f"{Path(p).name}: cannot read it ({err.strerror or type(err).__name__})")
        return added, errors

    def add_folder(self, folder: Path) -> tuple[list[Item], list[str]]:
        """Copy the supported files of a folder (not recursive) into the corpus."""
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise InvalidArgumentError(f"not a folder: {folder}")
        kinds = IMAGE_EXT | AUDIO_EXT | VIDEO_EXT | TEXT_EXT
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in kinds)
        return self.add_files(files[:MAX_UPLOAD_FILES], source="import")

    def quarantine(self, item: Item, reason: str) -> None:
        """Take ``item`` out of the searchable corpus for good: listed in the manifest with ``reason``, its file
        moved out of the served folder; an index skips it from then on."""
        with self._lock:
            if item.id not in self.by_id:
                return
            reason = self.scrub(reason)[:300]
            if item.path:
                try:
                    dest = self.quarantine_root / item.path
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(self.file(item), dest)
                except OSError:  # listed all the same; the file stays where it was
                    pass
            self._append({"quarantined": item.id, "reason": reason})
            self.quarantined = {**self.quarantined, item.id: Quarantined(item, reason)}
            self.items = [i for i in self.items if i.id != item.id]
            self.by_id = {i.id: i for i in self.items}
            self.version += 1

    def scrub(self, message: str) -> str:
        """``message`` without the server's folders (a path keeps its last part only)."""
        for folder in (self.quarantine_root, self.root, self.root.parent):
            message = message.replace(str(folder) + os.sep, "").replace(str(folder), "")
        return _ABSOLUTE_PATH.sub(lambda m: m.group(0).rsplit("/", 1)[-1], message)


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1)


_ABSOLUTE_PATH = re.compile(r"(?<![\w.])(?:/[\w.@+~-]+){2,}")


def _check_quota(name: str, size: int, used_bytes: int, used_items: int) -> None:
    if used_items + 1 > MAX_CORPUS_ITEMS:
        raise InvalidArgumentError(f"{name}: the corpus is full ({used_items} added items, the quota is "
                                   f"{MAX_CORPUS_ITEMS}); nothing more can be added")
    if used_bytes + size > MAX_CORPUS_BYTES:
        raise InvalidArgumentError(f"{name}: the corpus is full ({used_bytes / 2**20:.1f} MiB of added files, the "
                                   f"quota is {MAX_CORPUS_BYTES / 2**20:.0f} MiB); {size} more bytes do not fit")


def _write_atomically(path: Path, data: bytes) -> None:
    """``data`` under ``path``, whole or not at all (a temporary name in the same folder, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_decodes(data: bytes, modality: Modality, name: str) -> None:
    """Decode ``data`` as a model does (``zoo.media.decode``: images whole, audio as far as a model listens,
    video frames by the sampling policy and its sound); an undecodable file raises InvalidArgumentError. A
    container probe is not enough: an MKV with a video track and no frame opens, and no model can embed it."""
    from zoo import media, truncation
    from zoo.base import MAX_AUDIO_SECONDS

    token = truncation.begin()  # a long file is fine here: the model cuts it too
    try:
        media.decode(data, 0, modality, VALIDATE_SAMPLE_RATE, MAX_AUDIO_SECONDS, allow_paths=False)
    except InputError as err:
        raise InvalidArgumentError(f"{name}: {err.reason}") from None
    except Exception as err:  # a decoder that fails in its own way: still the file's fault
        raise InvalidArgumentError(f"{name}: cannot decode it ({type(err).__name__})") from None
    finally:
        truncation.end(token)
