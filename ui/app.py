"""The Gradio Blocks app: cross-modal search over the corpus, with named API endpoints.

Endpoints (usable from ``gradio_client``; every argument but the query has a default):
``/search_text``, ``/search_image``, ``/search_audio``, ``/search_video``, ``/search_interleaved``. Each returns
``(gallery, results, latency)``; ``results`` is the ranked list ``[{"rank", "score", "label", "modality",
"id"}, …]``. With ``rerank=True`` the top ``rerank_n`` results are reranked (:mod:`ui.rerank`), and each result
also carries ``score_before``, ``rank_before`` and ``reranked``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from zoo import postprocess as pp
from zoo.defaults import default_model
from zoo.errors import ZooError
from zoo.spec import Modality

from .backend import supporting
from .corpus import (
    AUDIO_EXT,
    IMAGE_EXT,
    MAX_CORPUS_BYTES,
    MAX_CORPUS_ITEMS,
    MAX_UPLOAD_FILES,
    TEXT_EXT,
    VIDEO_EXT,
    Corpus,
)
from .default_corpus import scene_colours
from .rerank import DEFAULT_RERANK, MAX_RERANK
from .search import Searcher, retrieval_modes
from .uploads import UPLOAD_MAX_AGE_S, discard_leftovers, discard_uploads

RETRIEVAL = retrieval_modes()  # the modes when the app is built (the dropdown's choices)

TARGETS = {  # query modality → the corpus modalities it can search
    Modality.TEXT: (Modality.IMAGE, Modality.AUDIO, Modality.VIDEO, Modality.TEXT),
    Modality.IMAGE: (Modality.IMAGE, Modality.VIDEO, Modality.TEXT),
    Modality.AUDIO: (Modality.IMAGE, Modality.TEXT),
    Modality.VIDEO: (Modality.TEXT, Modality.IMAGE, Modality.VIDEO),
    Modality.INTERLEAVED: (Modality.IMAGE,),
}


TEXT_EXAMPLES = ("a picture of a yellow star", "a cat", "an astronaut in space")


def examples(corpus: Corpus) -> dict[Modality, tuple[list[list[Any]], list[str]]]:
    """One-click example queries for each tab, from what the corpus holds: rows of query values, and labels."""
    def files(prefix: str | None, modality: str, n: int) -> list:
        found = [i for i in corpus.items if i.modality == modality and i.path
                 and (i.label.startswith(prefix) if prefix else ":" not in i.label)]
        return found[:n]

    out: dict[Modality, tuple[list[list[Any]], list[str]]] = {
        Modality.TEXT: ([[t] for t in TEXT_EXAMPLES], list(TEXT_EXAMPLES))}
    images = files(None, Modality.IMAGE.value, 2) + files("photo: ", Modality.IMAGE.value, 1)
    out[Modality.IMAGE] = ([[str(corpus.file(i))] for i in images], [i.label for i in images])
    sounds = files("spoken: ", Modality.AUDIO.value, 2) or files("sound: ", Modality.AUDIO.value, 2)
    out[Modality.AUDIO] = ([[str(corpus.file(i))] for i in sounds], [i.label for i in sounds])
    clips = files("clip: ", Modality.VIDEO.value, 2)
    out[Modality.VIDEO] = ([[str(corpus.file(i))] for i in clips], [i.label for i in clips])
    colours = scene_colours()  # the generated scenes' colours, named in their captions
    pairs = []
    for item in files(None, Modality.IMAGE.value, 8):  # a generated scene, recoloured by the text
        colour = next((c for c in colours if c in item.label.split()), None)
        if colour and len(pairs) < 2:
            pairs.append((item, f"but {colours[(colours.index(colour) + 2) % len(colours)]}"))
    out[Modality.INTERLEAVED] = ([[str(corpus.file(i)), text] for i, text in pairs],
                                 [f"{i.label} + “{text}”" for i, text in pairs])
    return out


def _guard(fn):
    """Turn `zoo` errors into a message on the page (the app keeps working)."""

    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ZooError as err:
            raise gr.Error(str(err)) from None

    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped


def build_app(searcher: Searcher, title: str = "embedding-zoo · cross-modal retrieval",
              uploads: Path | None = None) -> gr.Blocks:
    """The Blocks page; every search button is also a named API endpoint. ``uploads``: Gradio's upload folder
    (``GRADIO_TEMP_DIR``): an uploaded file's temporary copy there is deleted once it is added or rejected, and
    Gradio removes its other temporary files after :data:`UPLOAD_MAX_AGE_S`."""
    backend = searcher.backend
    corpus = searcher.corpus
    precisions = list(pp.PRECISIONS)

    def models_for(query: Modality, target: str) -> list[str]:
        return supporting(backend, (query, Modality(target)))

    def pick(query: Modality, target: str) -> str | None:
        names = models_for(query, target)
        preferred = default_model(Modality(target) if target != Modality.TEXT.value else query)
        return preferred if preferred in names else (names[0] if names else None)

    def header() -> str:
        # page users see counts only: server addresses and folders are the operator's business
        quarantined = len(corpus.quarantined)
        return (f"# {title}\nBackend: **{backend.kind}** · corpus: {len(corpus.items)} items"
                + (f" · {quarantined} item{'s' if quarantined != 1 else ''} quarantined" if quarantined else ""))

    with gr.Blocks(title=title, delete_cache=(UPLOAD_MAX_AGE_S, UPLOAD_MAX_AGE_S)) as demo:
        gr.Markdown(header)  # computed again on each page load
        with gr.Row():
            dims = gr.Number(value=0, precision=0, label="dimensions (0 = full)", minimum=0)
            precision = gr.Dropdown(precisions, value="float32", label="precision")
            k = gr.Slider(1, 24, value=8, step=1, label="results")
            mode = gr.Dropdown(list(RETRIEVAL), value="auto",
                               label="retrieval (model's kind, or hybrid: dense + sparse fused)",
                               elem_id="retrieval")
        with gr.Row():  # the second stage: what it does is on the page, which model does it too
            rerank = gr.Checkbox(False, label="rerank the top N", info=searcher.rerankers.describe(),
                                 elem_id="rerank")
            rerank_n = gr.Slider(1, MAX_RERANK, value=DEFAULT_RERANK, step=1, label="N (first-stage results reranked)",
                                 elem_id="rerank-n")
        gallery = gr.Gallery(label="results", columns=6, height="auto", elem_id="results-gallery", render=False)
        latency = gr.Markdown(elem_id="latency", render=False)
        results = gr.JSON(label="ranked results", elem_id="results-json", render=False)

        samples = examples(searcher.corpus)

        def tab(query_mod: Modality, label: str, query_component, endpoint: str, extra=None):
            targets = [t.value for t in TARGETS[query_mod]]
            with gr.Tab(label):
                with gr.Row():
                    target = gr.Radio(targets, value=targets[0], label="search for")
                    model = gr.Dropdown(models_for(query_mod, targets[0]), value=pick(query_mod, targets[0]),
                                        label="model", elem_id=f"model-{endpoint}")
                query_component.render()
                if extra is not None:
                    extra.render()
                button = gr.Button("Search", variant="primary", elem_id=f"btn-{endpoint}")
                rows, labels = samples[query_mod]
                shown = None
                if rows:  # a first visit shows what to try: a click fills the query and runs it
                    shown = gr.Examples(rows, [query_component] + ([extra] if extra is not None else []),
                                        example_labels=labels, label="Try one", elem_id=f"examples-{endpoint}",
                                        api_visibility="private")
            target.change(lambda t: gr.update(choices=models_for(query_mod, t), value=pick(query_mod, t)),
                          target, model, api_visibility="private")
            return target, model, button, shown

        text_q = gr.Textbox(label="text query", value="", elem_id="text-query", render=False)
        t_target, t_model, t_btn, t_ex = tab(Modality.TEXT, "Text → image / audio / video / text", text_q,
                                             "search_text")
        # PNG keeps an uploaded query lossless (Gradio's default re-encodes to lossy WebP)
        image_q = gr.Image(type="filepath", format="png", label="image query", elem_id="image-query", render=False)
        i_target, i_model, i_btn, i_ex = tab(Modality.IMAGE, "Image → image / text", image_q, "search_image")
        audio_q = gr.Audio(type="filepath", label="audio query", elem_id="audio-query", render=False)
        a_target, a_model, a_btn, a_ex = tab(Modality.AUDIO, "Audio → image / text", audio_q, "search_audio")
        video_q = gr.Video(label="video query", elem_id="video-query", render=False)
        v_target, v_model, v_btn, v_ex = tab(Modality.VIDEO, "Video → text / image / video", video_q, "search_video")
        mix_img = gr.Image(type="filepath", format="png", label="image", render=False)
        mix_txt = gr.Textbox(label="text modifier, e.g. 'blue'", render=False)
        m_target, m_model, m_btn, m_ex = tab(Modality.INTERLEAVED, "Image + text → image", mix_img,
                                             "search_interleaved", mix_txt)

        with gr.Tab("Corpus"):
            kinds = sorted(IMAGE_EXT | AUDIO_EXT | VIDEO_EXT | TEXT_EXT)
            gr.Markdown(f"Add up to {MAX_UPLOAD_FILES} files at a time ({', '.join(kinds)}); each must decode as "
                        "a model decodes it, then it is copied into the corpus folder and indexed for every model "
                        f"in use. Added files may total {MAX_CORPUS_BYTES // 2**20} MiB and {MAX_CORPUS_ITEMS} "
                        "items.")
            upload = gr.File(file_count="multiple", file_types=kinds, label="upload files", elem_id="upload")
            add = gr.Button("Add to corpus", elem_id="btn-add")
            added = gr.Markdown(elem_id="corpus-status")
            gr.Markdown(corpus.quarantine_summary, elem_id="corpus-quarantine")  # again on each page load

            def add_files(files, progress=gr.Progress()):
                """Add uploaded files to the corpus, then index them (server folders are the operator's
                `--corpus DIR` option, never a page field). Items a model fails on are quarantined."""
                paths = [Path(f) for f in files or []]
                try:
                    items, errors = corpus.add_files(paths)
                except ZooError as err:
                    raise gr.Error(str(err)) from None
                finally:  # copied into the corpus or rejected: Gradio's temporary copy goes either way
                    if uploads is not None:
                        discard_uploads(paths, uploads)
                        discard_leftovers(uploads)
                before = set(corpus.quarantined)
                try:
                    for key, index in list(searcher.indexes.items()):
                        searcher.index(key[0] if isinstance(key, tuple) else key, progress, index.kind)
                except ZooError as err:
                    raise gr.Error(str(err)) from None
                quarantined = [corpus.quarantined[i] for i in corpus.quarantined if i not in before]
                kept = [i for i in items if i.id in corpus.by_id]
                for e in errors:
                    gr.Warning(e)
                lines = errors + [f"{q.item.label}: quarantined ({q.reason})" for q in quarantined]
                return (f"added {len(kept)} item(s); rejected {len(errors)}"
                        + (f"; quarantined {len(quarantined)}" if quarantined else "")
                        + "".join(f"\n- {line}" for line in lines))

            add.click(add_files, [upload], added, api_name="add_files")

        latency.render()
        gallery.render()
        results.render()

        outs = [gallery, results, latency]
        settings = [dims, precision, k, mode, rerank, rerank_n]

        @_guard
        def run(query_mod: Modality, query, target, model, dimensions, precision, k, progress, mode="auto",
                rerank=False, rerank_n=DEFAULT_RERANK):
            valid = [t.value for t in TARGETS[query_mod]]
            if target not in valid:
                raise gr.Error(f"a {query_mod.value} query can search for {', '.join(valid)}, not {target!r}")
            if query is None or (isinstance(query, str) and not query.strip()):
                raise gr.Error("enter a query first")
            model = model or pick(query_mod, target)
            if model is None:
                raise gr.Error(f"no available model embeds both {query_mod.value} and {target}")
            if rerank:  # no reranker for these documents: the search runs, and the page says why
                why = searcher.rerankers.pick(model, query_mod, Modality(target))
                if isinstance(why, str):
                    gr.Warning(f"not reranked: {why}")
            return searcher.search(model, query, query_mod, target, k, dimensions or 0, precision, progress, mode,
                                   rerank_n if rerank else 0)

        def search_text(query: str, target: str = "image", model: str | None = None, dimensions: int = 0,
                        precision: str = "float32", k: int = 8, mode: str = "auto", rerank: bool = False,
                        rerank_n: int = DEFAULT_RERANK, progress=gr.Progress()):
            """Text query → ranked corpus items of ``target`` modality (``mode``: see ``RETRIEVAL``)."""
            return run(Modality.TEXT, query, target, model, dimensions, precision, k, progress, mode, rerank, rerank_n)

        def search_image(query: str, target: str = "image", model: str | None = None, dimensions: int = 0,
                         precision: str = "float32", k: int = 8, mode: str = "auto", rerank: bool = False,
                         rerank_n: int = DEFAULT_RERANK, progress=gr.Progress()):
            """Image query (file path or upload) → ranked corpus items."""
            return run(Modality.IMAGE, query, target, model, dimensions, precision, k, progress, mode, rerank, rerank_n)

        def search_audio(query: str, target: str = "image", model: str | None = None, dimensions: int = 0,
                         precision: str = "float32", k: int = 8, mode: str = "auto", rerank: bool = False,
                         rerank_n: int = DEFAULT_RERANK, progress=gr.Progress()):
            """Audio query (file path or recording) → ranked corpus items."""
            return run(Modality.AUDIO, query, target, model, dimensions, precision, k, progress, mode, rerank, rerank_n)

        def search_video(query: str, target: str = "text", model: str | None = None, dimensions: int = 0,
                         precision: str = "float32", k: int = 8, mode: str = "auto", rerank: bool = False,
                         rerank_n: int = DEFAULT_RERANK, progress=gr.Progress()):
            """Video query (file path or upload) → ranked corpus items."""
            return run(Modality.VIDEO, query, target, model, dimensions, precision, k, progress, mode, rerank, rerank_n)

        def search_interleaved(image: str, text: str = "", target: str = "image", model: str | None = None,
                               dimensions: int = 0, precision: str = "float32", k: int = 8, mode: str = "auto",
                               rerank: bool = False, rerank_n: int = DEFAULT_RERANK, progress=gr.Progress()):
            """An image plus a text modifier → ranked images."""
            if not image:
                raise gr.Error("choose an image first")
            parts = [{"image": image}] + ([text] if text and text.strip() else [])  # a bare str part is text
            return run(Modality.INTERLEAVED, parts, target, model, dimensions, precision, k, progress, mode, rerank,
                       rerank_n)

        wiring = [
            (search_text, [text_q, t_target, t_model], t_btn, t_ex),
            (search_image, [image_q, i_target, i_model], i_btn, i_ex),
            (search_audio, [audio_q, a_target, a_model], a_btn, a_ex),
            (search_video, [video_q, v_target, v_model], v_btn, v_ex),
            (search_interleaved, [mix_img, mix_txt, m_target, m_model], m_btn, m_ex),
        ]
        for fn, inputs, button, shown in wiring:
            button.click(fn, [*inputs, *settings], outs, api_name=fn.__name__)
            if shown is not None:  # the example fills the query; the search runs with the tab's own settings
                shown.load_input_event.then(fn, [*inputs, *settings], outs, api_visibility="private")
        text_q.submit(search_text, [text_q, t_target, t_model, *settings], outs, api_visibility="private")

    return demo
