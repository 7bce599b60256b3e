"""Gradio's upload folder, kept tidy: its temporary copies of uploaded files go once the corpus has them (or
has rejected them), the empty ``tmp*`` files its File component leaves go when no one has them open, and
what an earlier run left goes after :data:`UPLOAD_MAX_AGE_S`. A path outside the upload folder is never
touched."""

from __future__ import annotations

import os
import time
from pathlib import Path

UPLOAD_MAX_AGE_S = 3600  # Gradio's temporary copies older than this are removed (at start, then hourly)


def discard_uploads(paths: list, uploads: Path) -> int:
    """Delete Gradio's temporary copies of uploaded files (once copied into the corpus, or rejected), and their
    folders when empty; a path outside ``uploads`` is never touched. Returns how many files went."""
    root = Path(uploads).resolve()
    gone = 0
    for p in paths:
        try:
            path = Path(p).absolute()
            if not path.resolve().is_relative_to(root) or path.resolve() == root or not path.is_file():
                continue
            path.unlink()
            gone += 1
            parent = path.parent.resolve()
            while parent != root and parent.is_relative_to(root) and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
        except OSError:
            continue
    return gone


def discard_leftovers(uploads: Path, min_age_s: float = 60.0) -> int:
    """Delete the empty ``tmp*`` files Gradio leaves directly in its upload folder (its File component opens one
    per uploaded file and never uses it) that no one has open: where psutil lists this process's open files
    (Linux, macOS, Windows), none of them is it (the server's uploads in progress are open files); elsewhere,
    those older than ``min_age_s``. Returns how many went."""
    root = Path(uploads)
    open_now: set[str] | None
    try:
        import psutil  # the serve extra declares it, the core has it through peft; without it, the age rule

        open_now = {f.path for f in psutil.Process().open_files()}  # real paths, as /proc/self/fd gives them
    except ImportError:
        open_now = None
    except psutil.Error:  # a platform that will not list them
        open_now = None
    cutoff = time.time() - min_age_s
    gone = 0
    try:
        entries = list(os.scandir(root))
    except OSError:
        return 0
    for entry in entries:
        try:
            if not (entry.name.startswith("tmp") and entry.is_file(follow_symlinks=False)):
                continue
            info = entry.stat(follow_symlinks=False)
            busy = os.path.realpath(entry.path) in open_now if open_now is not None else info.st_mtime >= cutoff
            if info.st_size == 0 and not busy:
                os.unlink(entry.path)
                gone += 1
        except OSError:
            continue
    return gone


def clean_uploads(uploads: Path, max_age_s: float = UPLOAD_MAX_AGE_S) -> int:
    """Remove files under ``uploads`` last changed more than ``max_age_s`` ago (left by an earlier run), then
    empty folders; links are removed, never followed. Returns how many files went."""
    root = Path(uploads)
    if not root.is_dir():
        return 0
    cutoff = time.time() - max_age_s
    gone = 0
    for folder, dirs, files in os.walk(root, topdown=False):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = os.path.join(folder, name)
            try:
                if os.lstat(path).st_mtime < cutoff:
                    os.unlink(path)
                    gone += 1
            except OSError:
                continue
        if folder != str(root):
            try:
                os.rmdir(folder)  # only if empty
            except OSError:
                pass
    return gone
