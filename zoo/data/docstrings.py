"""Pairs of human-written text from this machine's Python: each standard-library function's or method's
docstring summary (its first line) and the rest of that docstring. Nothing is downloaded or stored.

The ``docstrings`` retrieval set (:mod:`zoo.evaluation.build`) is made of them, and so is the benchmark corpus
(:mod:`.sentences`) that ``zoo bench`` times and exported towers are checked on: data, not evaluation, so the
model-loading side reaches it without importing :mod:`zoo.evaluation`.
"""

from __future__ import annotations

import importlib
import inspect

#: standard-library modules whose docstrings make the pairs (importable without side effects)
MODULES = ("json", "os", "re", "collections", "itertools", "functools", "pathlib", "string", "textwrap", "shutil",
           "subprocess", "argparse", "logging", "email.utils", "urllib.parse", "statistics", "decimal", "datetime",
           "calendar", "random", "heapq", "bisect", "csv", "zipfile", "tarfile", "difflib", "inspect", "typing",
           "contextlib", "threading", "socket", "base64", "hashlib", "tempfile", "glob", "fnmatch", "copy",
           "pickle", "gzip", "io", "codecs", "unicodedata", "locale", "gettext", "shlex", "configparser",
           "operator", "ast", "dis", "tokenize", "traceback", "warnings", "weakref", "types", "pdb", "doctest",
           "unittest.case", "sqlite3", "xml.dom.minidom", "html", "http.cookies", "mimetypes", "uuid", "ipaddress",
           "asyncio.tasks", "asyncio.streams", "concurrent.futures", "multiprocessing.pool", "email.message",
           "http.client", "urllib.request", "xml.etree.ElementTree", "dataclasses", "enum", "fractions", "graphlib",
           "imaplib", "smtplib", "ftplib", "mailbox", "netrc", "plistlib", "pprint", "reprlib", "sched", "secrets",
           "selectors", "shelve", "stat", "tomllib", "trace", "wave", "zipimport", "zoneinfo", "lzma", "bz2")


def docstring_pairs(limit: int | None = None) -> list[tuple[str, str]]:
    """(summary line, rest of the docstring) of standard-library functions and methods, each side unique."""
    pairs, heads, bodies = [], set(), set()
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        members = [m for _, m in inspect.getmembers(module)]
        members += [f for c in members if inspect.isclass(c) for _, f in inspect.getmembers(c, inspect.isfunction)]
        for obj in members:
            doc = inspect.getdoc(obj) if callable(obj) else None
            if not doc:
                continue
            head, _, rest = doc.partition("\n")
            head, rest = head.strip(), " ".join(rest.split())[:1500]
            if len(head) < 20 or len(rest) < 80 or head in heads or rest in bodies:
                continue
            heads.add(head)
            bodies.add(rest)
            pairs.append((head, rest))
    return pairs[:limit]
