"""Retrieval sets made at run time from what is on this machine: nothing is downloaded and nothing is stored
in the repository. ``zoo eval --build NAME DIR`` writes one in the BEIR layout (:mod:`.data`).

==============  =====================================================================================
name            how it is made
==============  =====================================================================================
docstrings      Python standard-library functions and methods: the query is a docstring's first line
                (its human-written summary), the one relevant document the rest of that docstring.
debian          the installed Debian packages (``/var/lib/dpkg/status``): the query is a package's
                one-line synopsis, the document its extended description, both written by maintainers.
manpages        the installed manual pages of section 1: the query is a page's one-line description (its
                NAME line), the document its DESCRIPTION section as plain text (:mod:`.manpages`).
shapes          text → image: held-out renderings of every colour × shape pair (the aligned model's
                world, as in the demo corpus) in several galleries; a query is a caption in a held-out
                phrasing; relevant: every image of its colour × shape pair.
shapes-i2t      image → text: the same images as queries against every held-out caption of every pair.
speech          audio → image: captions spoken by held-out espeak-ng voices against the images.
longdocs        long documents: a standard-library module's whole documentation (module, class and
                function docstrings in source order, hundreds to thousands of tokens); the query is one
                class's or function's summary, taken out of the document (:mod:`zoo.data.longdocs`).
                ``limit`` counts documents (default 150, with 8/3 queries each). Query rows carry ``doc``
                and ``start`` (where the answer sits), read by :mod:`.long`.
==============  =====================================================================================

Pairs with a repeated query or document are dropped, so every query has exactly the documents it names.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..data.docstrings import docstring_pairs
from ..errors import InvalidArgumentError, choices
from .data import write

DPKG_STATUS = Path("/var/lib/dpkg/status")


def debian_pairs(status: Path = DPKG_STATUS) -> list[tuple[str, str]]:
    """(synopsis, extended description) of every installed Debian package, each side unique."""
    if not status.is_file():
        raise InvalidArgumentError(f"{status} is missing: the debian set needs a Debian-based system")
    pairs, heads, bodies = [], set(), set()
    for stanza in status.read_text(encoding="utf-8", errors="replace").split("\n\n"):
        lines = stanza.splitlines()
        start = next((i for i, line in enumerate(lines) if line.startswith("Description:")), None)
        if start is None:
            continue
        head = lines[start].partition(":")[2].strip()
        body = []
        for line in lines[start + 1:]:
            if not line.startswith(" "):
                break
            body.append("" if line.strip() == "." else line.strip())  # " ." is a paragraph break
        rest = " ".join(" ".join(body).split())
        if len(head) < 10 or len(rest) < 80 or head in heads or rest in bodies:
            continue
        heads.add(head)
        bodies.add(rest)
        pairs.append((head, rest))
    return pairs


def _text_pairs(dest: Path, pairs: list[tuple[str, str]]) -> Path:
    corpus = [{"_id": f"d{i}", "title": "", "text": doc} for i, (_, doc) in enumerate(pairs)]
    queries = [{"_id": f"q{i}", "text": query} for i, (query, _) in enumerate(pairs)]
    return write(dest, corpus, queries, [(f"q{i}", f"d{i}", 1) for i in range(len(pairs))])


def build_docstrings(dest: Path, limit: int | None = None, seed: int = 0) -> Path:
    """The ``docstrings`` set (see the module table)."""
    return _text_pairs(dest, docstring_pairs(limit))


def build_debian(dest: Path, limit: int | None = None, seed: int = 0) -> Path:
    """The ``debian`` set (see the module table)."""
    return _text_pairs(dest, debian_pairs()[:limit])


def build_manpages(dest: Path, limit: int | None = None, seed: int = 0) -> Path:
    """The ``manpages`` set (see the module table)."""
    from .manpages import manpage_pairs

    return _text_pairs(dest, manpage_pairs(limit=limit))


def _shape_gallery(dest: Path, rng: np.random.Generator, galleries: int) -> list[tuple[str, object]]:
    """Render ``galleries`` held-out galleries into ``dest/images``: (relative path, scene) per image."""
    from ..data import shapes as S

    (dest / "images").mkdir(parents=True, exist_ok=True)
    out = []
    for g in range(galleries):
        for scene in S.single_object_gallery(rng, S.HELDOUT_RENDER):
            rel = f"images/g{g}_{scene.key.replace(' ', '_')}.png"
            S.render(scene, rng, S.HELDOUT_RENDER).save(dest / rel)
            out.append((rel, scene))
    return out


def _media_set(dest: Path, limit: int | None, seed: int, direction: str) -> Path:
    from ..data import shapes as S

    rng = np.random.default_rng(seed)
    images = _shape_gallery(dest, rng, max(1, (limit or 192) // len(S.ALL_COMBOS)))
    if direction == "i2t":  # images ask for captions: every held-out phrasing of every image, deduplicated
        key_of = {c: scene.key for _, scene in images for c in S.captions(scene, S.EVAL_TEMPLATES)}
        texts = sorted(key_of)
        corpus = [{"_id": f"c{i}", "text": t} for i, t in enumerate(texts)]
        by_key: dict[str, list[str]] = {}
        for i, t in enumerate(texts):
            by_key.setdefault(key_of[t], []).append(f"c{i}")
        queries = [{"_id": f"i{i}", "image": rel} for i, (rel, _) in enumerate(images)]
        qrels = [(f"i{i}", did, 1) for i, (_, scene) in enumerate(images) for did in by_key[scene.key]]
        return write(dest, corpus, queries, qrels)
    corpus = [{"_id": f"i{i}", "image": rel} for i, (rel, _) in enumerate(images)]
    by_key = {}
    for i, (_, scene) in enumerate(images):
        by_key.setdefault(scene.key, []).append(f"i{i}")
    asked, texts = [], []  # one caption per image, in a shuffled order; a caption already asked is skipped
    for i in rng.permutation(len(images)):
        scene = images[i][1]
        text = S.captions(scene, S.EVAL_TEMPLATES)[int(rng.integers(len(S.EVAL_TEMPLATES)))]
        if direction != "t2i" or text not in texts:  # spoken twice, a caption is two different queries
            asked.append(scene)
            texts.append(text)
    queries = ([{"_id": f"q{i}", "text": t} for i, t in enumerate(texts)] if direction == "t2i"
               else _spoken(dest, texts, rng))
    qrels = [(f"q{i}", did, 1) for i, scene in enumerate(asked) for did in by_key[scene.key]]
    return write(dest, corpus, queries, qrels)


def _spoken(dest: Path, texts: list[str], rng: np.random.Generator) -> list[dict]:
    from ..data import speech as P

    if not P.espeak_available():
        raise InvalidArgumentError("the speech set needs espeak-ng (apt-get install espeak-ng)")
    (dest / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, text in enumerate(texts):
        rel = f"audio/q{i}.wav"
        (dest / rel).write_bytes(P.wav_bytes(P.speak(text, P.sample_voice(rng, P.HELDOUT_VOICES), rng)))
        rows.append({"_id": f"q{i}", "audio": rel})
    return rows


def build_shapes(dest: Path, limit: int | None = None, seed: int = 20261123) -> Path:
    """The ``shapes`` set (text → image; see the module table); ``limit`` is the number of images."""
    return _media_set(dest, limit, seed, "t2i")


def build_shapes_i2t(dest: Path, limit: int | None = None, seed: int = 20261123) -> Path:
    """The ``shapes-i2t`` set (image → text)."""
    return _media_set(dest, limit, seed, "i2t")


def build_speech(dest: Path, limit: int | None = None, seed: int = 20261123) -> Path:
    """The ``speech`` set (audio → image)."""
    return _media_set(dest, limit, seed, "a2i")


def build_longdocs(dest: Path, limit: int | None = None, seed: int = 0) -> Path:
    """The ``longdocs`` set (see the module table); ``limit`` is the number of documents."""
    from ..data.longdocs import long_docs

    docs, asked = long_docs(150 if limit is None else limit, seed=seed)
    corpus = [{"_id": d.module, "title": "", "text": d.text} for d in docs]
    queries = [{"_id": f"q{i}", "text": text, "doc": module, "start": start, "name": name}
               for i, (text, module, start, name) in enumerate(asked)]
    return write(dest, corpus, queries, [(f"q{i}", q[1], 1) for i, q in enumerate(asked)])


BUILDERS: dict[str, Callable[..., Path]] = {
    "docstrings": build_docstrings,
    "debian": build_debian,
    "manpages": build_manpages,
    "shapes": build_shapes,
    "shapes-i2t": build_shapes_i2t,
    "speech": build_speech,
    "longdocs": build_longdocs,
}


def build(name: str, dest: str | Path, limit: int | None = None, seed: int | None = None) -> Path:
    """Write the set ``name`` into the folder ``dest`` (created; it must not hold a set already)."""
    if name not in BUILDERS:
        raise InvalidArgumentError(f"unknown set {name!r}; choose one of {choices(BUILDERS)}", "build")
    dest = Path(dest)
    if (dest / "corpus.jsonl").exists():
        raise InvalidArgumentError(f"{dest} already holds a set (corpus.jsonl); choose an empty folder")
    if limit is not None and limit < 1:
        raise InvalidArgumentError("limit must be at least 1", "limit")
    dest.mkdir(parents=True, exist_ok=True)
    kwargs = {} if seed is None else {"seed": seed}
    return BUILDERS[name](dest, limit, **kwargs)
