"""mteb's encoder protocol over any zoo model, in-process or served, and mteb retrieval tasks from local sets.

    import mteb, zoo
    from zoo.integrations.mteb import MTEBEncoder, beir_task

    model = MTEBEncoder(zoo.create("sentence-transformers/all-MiniLM-L6-v2"))   # or a TritonEmbedder
    result = mteb.evaluate(model, beir_task("sets/docstrings"), cache=None)

Queries use the model's ``query`` prompt and documents its ``document`` prompt when it has them (the same rule
as ``zoo eval``); vectors are L2-normalized and compared by cosine similarity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta, ScoringFunction
from mteb.types import PromptType

from ..evaluation.data import RetrievalSet, load
from ..evaluation.embed import side_prompt
from ..spec import Modality

_MTEB_MODALITIES = {Modality.TEXT: "text", Modality.IMAGE: "image", Modality.AUDIO: "audio"}


class MTEBEncoder(AbsEncoder):
    """A zoo model (anything with zoo's ``encode()`` and ``spec``) as an mteb encoder."""

    def __init__(self, model: Any, batch_size: int | None = None) -> None:
        self.model = model
        self.batch_size = batch_size
        spec = model.spec
        self.mteb_model_meta = ModelMeta(
            loader=None, name=f"zoo/{spec.name.replace('/', '__')}", revision=None, release_date=None,
            languages=None, n_parameters=None, memory_usage_mb=None, max_tokens=spec.max_length,
            embed_dim=spec.dim, license=None, open_weights=None, public_training_code=None,
            public_training_data=None, framework=["PyTorch"], similarity_fn_name=ScoringFunction.COSINE,
            use_instructions=bool(spec.prompts), training_datasets=None,
            modalities=[v for m, v in _MTEB_MODALITIES.items() if spec.supports(m)],
        )

    def encode(self, inputs: Any, *, task_metadata: TaskMetadata, hf_split: str, hf_subset: str,
               prompt_type: PromptType | None = None, **kwargs: Any) -> np.ndarray:
        """``[N, dim]`` unit vectors of every batch of ``inputs`` (an mteb DataLoader of text or image rows)."""
        prompt = side_prompt(self.model.spec.prompts, prompt_type == PromptType.query)
        out = []
        for batch in inputs:
            modality = next((m for m in ("text", "image", "audio") if batch.get(m) is not None), None)
            if modality is None:
                raise ValueError(f"an mteb batch with none of text, image, audio: {sorted(batch)}")
            out.append(self.model.encode(list(batch[modality]), modality, normalize=True, precision="float32",
                                         prompt_name=prompt, batch_size=self.batch_size))
        return np.concatenate(out) if out else np.zeros((0, self.model.spec.dim), np.float32)


def beir_task(data: str | Path | RetrievalSet, name: str | None = None) -> AbsTaskRetrieval:
    """An mteb retrieval task (test split, nDCG@10 main score) over a local BEIR-layout text set, read by
    :func:`zoo.evaluation.data.load`: nothing is downloaded."""
    from datasets import Dataset
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData

    data = data if isinstance(data, RetrievalSet) else load(data)
    if any(m != Modality.TEXT for m in data.corpus.modalities + data.queries.modalities):
        raise ValueError("beir_task builds text-only tasks; this set holds image or audio rows")
    task_name = name or f"Zoo{data.name.title().replace('-', '').replace('_', '')}Retrieval"

    class _LocalRetrieval(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name=task_name, type="Retrieval", main_score="ndcg_at_10", category="t2t", modalities=["text"],
            description=f"Local BEIR-layout set {data.name!r} read by zoo.", reference=None,
            dataset={"path": "local", "revision": data.fingerprint}, eval_splits=["test"], eval_langs=["eng-Latn"],
            date=None, domains=None, task_subtypes=None, license=None, annotations_creators=None, dialect=None,
            sample_creation=None, bibtex_citation="",
        )

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            # documents are already "title text" joined by the loader: give mteb the joined text, no title
            split = RetrievalSplitData(
                corpus=Dataset.from_list([{"id": i, "text": t} for i, t in zip(data.corpus.ids, data.corpus.items)]),
                queries=Dataset.from_list([{"id": i, "text": t}
                                           for i, t in zip(data.queries.ids, data.queries.items)]),
                relevant_docs=data.qrels, top_ranked=None)
            self.dataset = {"default": {"test": split}}
            self.data_loaded = True

    return _LocalRetrieval()
