"""The ``manpages`` set: the installed manual pages of section 1 (user commands), read from their roff source.

A query is a page's one-line description (its NAME section after ``\\-``: "list directory contents"), its one
relevant document the page's DESCRIPTION section as plain text, both written by the command's authors. Pages
that only point at another (``.so``), pages whose description is generated ("manual page for ..."), and pairs
whose query or document repeats another's are left out, and a command family (the file name up to its first
``-``, ``_`` or ``.``: ``git``, ``llvm``, ``gcloud``) gives at most :data:`MAX_PER_FAMILY` pages, in file-name order,
so that one tool's generated reference (the Google Cloud CLI installs some 16,000 sub-command pages) does not
make the set. The roff is read with a small reader of its own
(font changes, escapes and layout requests dropped; text-bearing macros of man(7) and mdoc(7) kept), so nothing
beyond the files is needed.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from ..errors import InvalidArgumentError

MAN1 = Path("/usr/share/man/man1")
MAX_PAGE_BYTES = 4 * 1024 * 1024  # a page's roff, decompressed
MAX_DOC_CHARS = 2000  # a document is the description's start: far past MiniLM's 256 tokens already
MIN_DOC_CHARS = 80
MIN_QUERY_CHARS = 10
MAX_PER_FAMILY = 25

_NAMED = {"em": "-", "en": "-", "hy": "-", "mi": "-", "aq": "'", "cq": "'", "oq": "'", "lq": '"', "rq": '"',
          "dq": '"', "bu": "*", "co": "(c)", "rg": "(R)", "tm": "(TM)", "ti": "~", "ha": "^", "rs": "\\",
          "ga": "`", "aa": "'", "pl": "+", "mu": "x", "<=": "<=", ">=": ">=", "->": "->", "<-": "<-"}
_ESCAPES = re.compile(r"\\(?:f(?:\(..|\[[^\]]*\]|.)|\((..)|\[([^\]]*)\]|\*(?:\(..|\[[^\]]*\]|.)|s[+-]?\d+|"
                      r"[&/,|^:%c!]|(.))")
#: mdoc macros whose arguments are text (``Fl`` gets its dash back); any other request is layout
_MDOC_TEXT = {"Nm", "Ar", "Pa", "Xr", "Ql", "Dq", "Sq", "Qq", "Em", "Cm", "Li", "Ev", "Va", "Sy", "Ic", "Dv", "Er",
              "Fn", "Fa", "Ft", "Op", "Oo", "Oc", "Pq", "Aq", "Ad", "An", "Lk", "Mt", "Tn", "Ux", "At", "Bx", "Ox",
              "Nx", "Fx", "Bsx", "Dl", "It", "No", "Ns", "Nd", "Fl"}
_MAN_TEXT = {"B", "I", "BR", "RB", "IR", "RI", "BI", "IB", "SM", "SB", "UR", "MT"}


def _unescape(text: str) -> str:
    def one(m: re.Match) -> str:
        if m.group(1) is not None:
            return _NAMED.get(m.group(1), "")
        if m.group(2) is not None:
            return _NAMED.get(m.group(2), "")
        c = m.group(3)
        if c is None:
            return ""
        return {"-": "-", "e": "\\", "\\": "\\", " ": " ", "~": " ", "0": " ", "'": "'", "`": "`", ".": "."}.get(c, "")

    return _ESCAPES.sub(one, text)


def _args(rest: str) -> list[str]:
    return [a.strip('"') for a in re.findall(r'"[^"]*"|\S+', rest)]


def _mdoc(words: list[str]) -> str:
    out, dash = [], False
    for w in words:
        if w == "Fl":
            dash = True
        elif w not in _MDOC_TEXT:
            out.append("-" + w if dash else w)
            dash = False
    return " ".join(out)


def _text_of(lines: list[str]) -> str:
    """The running text of roff ``lines``: requests that carry text keep it, the others are dropped."""
    out = []
    for line in lines:
        if line.startswith((r'.\"', r"'\"")) or line.strip() in (".", "'"):
            continue
        if line[:1] in (".", "'"):
            name, _, rest = line[1:].strip().partition(" ")
            if name in _MAN_TEXT:
                out.append(" ".join(_args(rest)) if name in ("B", "I", "SM", "SB") else "".join(_args(rest)))
            elif name in _MDOC_TEXT:
                out.append(_mdoc([name] + _args(rest)))
            continue
        out.append(line)
    return " ".join(_unescape(" ".join(out)).split())


def _sections(source: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = None
    for line in source.splitlines():
        head = re.match(r"^\.(SH|Sh)\s+(.*)$", line)
        if head:
            current = " ".join(_args(head.group(2))).upper()
            sections.setdefault(current, [])
        elif current is not None:
            sections[current].append(line)
    return sections


def page_pair(source: str) -> tuple[str, str] | None:
    """``(description line, DESCRIPTION text)`` of one page's roff, or None when it has not both."""
    sections = _sections(source)
    name_lines, body = sections.get("NAME"), sections.get("DESCRIPTION")
    if not name_lines or not body:
        return None
    nd = next((line for line in name_lines if line.startswith(".Nd ")), None)  # mdoc
    if nd is not None:
        query = _text_of([nd[4:]])
    else:
        name = _text_of(name_lines)
        if " - " not in name:
            return None
        query = name.split(" - ", 1)[1].strip()
    doc = _text_of(body)
    if len(doc) > MAX_DOC_CHARS:
        doc = doc[:MAX_DOC_CHARS].rsplit(" ", 1)[0]
    if len(query) < MIN_QUERY_CHARS or len(doc) < MIN_DOC_CHARS or "manual page for" in query.lower():
        return None
    return query, doc


def _read(path: Path) -> str | None:
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")) as f:
            raw = f.read(MAX_PAGE_BYTES + 1)
    except (OSError, EOFError):
        return None
    if len(raw) > MAX_PAGE_BYTES:
        return None
    text = raw.decode("utf-8", errors="replace")
    first = next((line for line in text.splitlines() if line.strip() and not line.startswith((r'.\"', r"'\""))), "")
    return None if first.startswith(".so ") else text


def manpage_pairs(folder: Path = MAN1, limit: int | None = None) -> list[tuple[str, str]]:
    """(description line, DESCRIPTION text) of the pages in ``folder`` in file-name order, each side unique, at
    most :data:`MAX_PER_FAMILY` per command family; at most ``limit`` in all."""
    if not folder.is_dir():
        raise InvalidArgumentError(f"{folder} is missing: the manpages set needs the installed manual pages")
    pairs: list[tuple[str, str]] = []
    heads: set[str] = set()
    bodies: set[str] = set()
    families: dict[str, int] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink()):
        family = re.split(r"[-_.]", path.name, maxsplit=1)[0]
        if families.get(family, 0) >= MAX_PER_FAMILY:
            continue
        text = _read(path)
        pair = page_pair(text) if text is not None else None
        if pair is None or pair[0] in heads or pair[1] in bodies:
            continue
        heads.add(pair[0])
        bodies.add(pair[1])
        families[family] = families.get(family, 0) + 1
        pairs.append(pair)
        if limit is not None and len(pairs) >= limit:
            break
    if not pairs:
        raise InvalidArgumentError(f"no manual page in {folder} has both a NAME and a DESCRIPTION section")
    return pairs
