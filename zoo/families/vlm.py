"""Interleaved image+text embeddings from a vision-language model, each checkpoint read by its card's recipe.

An input is an ordered list of parts (text and images); plain ``text`` and ``image`` inputs are one-part
interleaved inputs. Here a *prompt* is the card's instruction: ``spec.prompts`` maps names to instructions. The
embedding is the final hidden state of the last token (last-token pooling). ``options["recipe"]`` names how an
input is written for the model:

- ``gme`` (GME, Qwen2-VL): the chat format GME was trained on::

    <|im_start|>system\\n{instruction}<|im_end|>\\n<|im_start|>user\\n{parts}<|im_end|>\\n<|im_start|>assistant\\n<|endoftext|>

  where each image part becomes ``<|vision_start|><|image_pad|><|vision_end|>`` and text parts are inserted
  as they are.
- ``vlm2vec`` (VLM2Vec, Qwen2-VL): no chat wrapping; the image placeholders, the instruction and the text,
  joined by spaces: ``<|image_pad|> Represent the given image with the following question: {text}``. The hub
  checkpoint is a LoRA adapter on ``options["base"]``; it is merged into the base weights at load.
- ``mme5`` (mmE5, Llama 3.2 Vision): ``<|image|><|begin_of_text|> {instruction} {text}`` with images, the
  instruction and text alone without (the processor puts ``<|begin_of_text|>`` first).

(the processor expands each image placeholder to the image's patch tokens).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..base import Embedder
from ..batching import SPECIAL_TOKENS
from ..front import EncodeOptions
from ..media import Part
from ..registry import register_checkpoints, register_refusals
from ..spec import EmbedderSpec, Modality
from .common import folder_config, pool, token_counts

MODALITIES = (Modality.TEXT, Modality.IMAGE, Modality.INTERLEAVED)
VLM_TYPES = {"qwen2_vl", "qwen2_5_vl", "mllama"}
DEFAULT_INSTRUCTION = "You are a helpful assistant."
IMAGE_PART = "<|vision_start|><|image_pad|><|vision_end|>"


def chat_text(parts: list, instruction: str | None) -> str:
    """The GME chat string of one interleaved input (images become vision placeholders)."""
    content = "".join(p.value if p.is_text else IMAGE_PART for p in parts)
    return (f"<|im_start|>system\n{instruction or DEFAULT_INSTRUCTION}<|im_end|>\n<|im_start|>user\n{content}"
            "<|im_end|>\n<|im_start|>assistant\n<|endoftext|>")


def spaced_text(parts: list, instruction: str | None, image: str, after_images: str = "") -> str:
    """The MMEB input string (VLM2Vec, mmE5): one ``image`` placeholder per image (then ``after_images``),
    the instruction and the text, joined by spaces."""
    images = sum(not p.is_text for p in parts)
    text = " ".join(p.value for p in parts if p.is_text)
    return " ".join(x for x in (image * images + after_images if images else "", instruction or "", text) if x)


#: recipe → how one input is written for the model (see the module docstring)
RECIPES = {"gme": chat_text, "vlm2vec": partial(spaced_text, image="<|image_pad|>"),
           "mme5": partial(spaced_text, image="<|image|>", after_images="<|begin_of_text|>")}


class VLMEmbedder(Embedder):
    """Qwen2-VL(-class) model + processor; last-token pooling over the GME chat format."""

    claims = frozenset(VLM_TYPES)

    folder_priority = 20

    def __init__(self, spec: EmbedderSpec, path: Path, device: str | None = None) -> None:
        super().__init__(spec, device)
        from transformers import AutoProcessor

        self.recipe = spec.options.get("recipe", "gme")
        if self.recipe not in RECIPES:
            raise ValueError(f"{spec.name}: recipe {self.recipe!r} not in {sorted(RECIPES)}")
        self.write = RECIPES[self.recipe]
        # what a text's row holds besides its text and instruction: the recipe's markup (ASCII, so at most a token
        # a character, the default instruction included) and the spaces joining them (token budgets)
        self.text_extra_tokens = len(self.write([Part("text", "")], None)) + 2 + SPECIAL_TOKENS
        self.processor = AutoProcessor.from_pretrained(path, trust_remote_code=False)  # never a folder's own code
        self.model = _load_model(spec, path).to(self.device).eval()

    @classmethod
    def spec_from_folder(cls, path: Path) -> EmbedderSpec | None:
        """A Qwen2-VL / Qwen2.5-VL folder (GME recipe) or a Llama 3.2 Vision one (mmE5 recipe)."""
        cfg = folder_config(path, VLM_TYPES)
        if cfg is None:
            return None
        text = cfg.get("text_config", cfg)
        recipe = "mme5" if cfg["model_type"] == "mllama" else "gme"
        return EmbedderSpec(
            name=str(path), family="vlm", modalities=MODALITIES, dim=int(text["hidden_size"]),
            license="see the folder's model card", source=str(path),
            max_length=int(text.get("max_position_embeddings", 32768)),
            prompts={"default": DEFAULT_INSTRUCTION}, default_prompt_name="default",
            description=f"local {cfg['model_type']} model, {recipe} recipe", options={"recipe": recipe},
        )

    def _parts(self, item: Any, modality: Modality) -> list[Part]:
        return item if modality is Modality.INTERLEAVED else [Part(modality.value, item)]

    def _lengths(self, items: list[Any], modality: Modality, prompt: str | None) -> list[int]:
        # text length plus a rough token count per image: enough to batch similar sizes together
        return [sum(len(p.value) if p.is_text else 256 for p in self._parts(x, modality)) for x in items]

    def _media_tokens(self, kind: str, value: Any) -> int | None:
        """Qwen2-VL recipes: an image's tokens in the row, as its processor makes them (the image resized by
        ``smart_resize`` within the processor's pixel bounds, in patches merged ``merge_size``² into one), and its
        placeholder's markup. mmE5's Llama-Vision reads images by cross-attention, apart from the row: not
        counted."""
        ip = getattr(self.processor, "image_processor", None)
        if kind != "image" or self.recipe == "mme5" or not hasattr(ip, "merge_size"):
            return None
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

        factor = ip.patch_size * ip.merge_size
        h, w = smart_resize(value.height, value.width, factor, ip.size["shortest_edge"], ip.size["longest_edge"])
        return (h // factor) * (w // factor) + 2  # and the placeholder's own markup (<|vision_start|>, <|vision_end|>)

    def _token_sizes(self, items: list[Any], modality: Modality, prompt: str | None,
                     exact: bool = False) -> list[int] | None:
        # an image is written like an interleaved item (markup, instruction, the image's tokens)
        if modality is Modality.IMAGE:
            return super()._token_sizes([self._parts(x, modality) for x in items], Modality.INTERLEAVED, prompt, exact)
        return super()._token_sizes(items, modality, prompt, exact)

    def _text_tokens(self, texts: list[str], prompt: str | None) -> list[int]:
        return token_counts(self.processor.tokenizer, [self.write([Part("text", t)], prompt) for t in texts],
                            self.spec.max_length)

    def forward(self, batch: list[Any], modality: Modality, opts: EncodeOptions, kind: str) -> np.ndarray:
        import torch

        prompt = opts.prompt
        parts = [self._parts(x, modality) for x in batch]
        texts = [self.write(p, prompt) for p in parts]
        images = [p.value for ps in parts for p in ps if not p.is_text]
        if images and self.recipe == "mme5":  # Llama-Vision's processor takes each input's images apart
            images = [[p.value for p in ps if not p.is_text] for ps in parts]
        inputs = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        inputs = inputs.to(self.device)
        with torch.inference_mode():
            hidden = self.model(**inputs).last_hidden_state
            out = pool(hidden, inputs["attention_mask"], "last")
        return out.float().cpu().numpy()


def _load_model(spec: EmbedderSpec, path: Path) -> Any:
    """The checkpoint's base model (the transformer without its language-model head). A folder that holds a
    LoRA adapter (``adapter_config.json``, as VLM2Vec's hub checkpoints) is merged into the weights of
    ``options["base"]`` first, found like any registered model's (``zoo.weights``)."""
    import dataclasses

    from transformers import AutoModel, AutoModelForImageTextToText

    if not (path / "adapter_config.json").is_file():
        return AutoModel.from_pretrained(path, trust_remote_code=False)
    from peft import PeftModel

    from ..errors import InvalidArgumentError
    from ..weights import resolve

    base = spec.options.get("base")
    if not base:
        raise InvalidArgumentError(f"{spec.name}: the folder holds a LoRA adapter but the spec names no base "
                                   "model (options['base'])")
    base_path = resolve(dataclasses.replace(spec, name=base, source=base))
    # the adapter was trained on the generation model; its module names are that class's
    base_model = AutoModelForImageTextToText.from_pretrained(base_path, trust_remote_code=False)
    merged = PeftModel.from_pretrained(base_model, path).merge_and_unload()
    return merged.model


_GME_PROMPTS = {
    "default": DEFAULT_INSTRUCTION,
    "query": "Find an image that matches the given text.",
    "document": DEFAULT_INSTRUCTION,
}
_GME = "GME (Qwen2-VL): universal text / image / interleaved embeddings, instruction prompts"
#: registry name (the hub id) → spec fields
CHECKPOINTS: dict[str, dict[str, Any]] = {
    "Alibaba-NLP/gme-Qwen2-VL-2B-Instruct": dict(dim=1536, description=_GME),
    "Alibaba-NLP/gme-Qwen2-VL-7B-Instruct": dict(dim=3584, description=_GME),
}
register_checkpoints("vlm", CHECKPOINTS, modalities=MODALITIES, license="apache-2.0", max_length=32768,
                     prompts=_GME_PROMPTS, default_prompt_name="default", batch_size=4, max_batch_size=8)

#: the MMEB instructions the VLM2Vec and mmE5 cards use (a query names its task; a target says what it is)
_MMEB_PROMPTS = {
    "document": "Represent the given image.",
    "query": "Find me an everyday image that matches the given caption:",
    "image_query": "Find a day-to-day image that looks similar to the provided image.",
    "question": "Represent the given image with the following question:",
    "text": "",
}
_VLM2VEC = "VLM2Vec (Qwen2-VL + LoRA, MMEB): instruction-following text / image / interleaved embeddings"
register_checkpoints("vlm", {
    "TIGER-Lab/VLM2Vec-Qwen2VL-2B": dict(dim=1536, options={"recipe": "vlm2vec", "base": "Qwen/Qwen2-VL-2B-Instruct"},
                                         description=_VLM2VEC),
    "TIGER-Lab/VLM2Vec-Qwen2VL-7B": dict(dim=3584, options={"recipe": "vlm2vec", "base": "Qwen/Qwen2-VL-7B-Instruct"},
                                         description=_VLM2VEC),
}, modalities=MODALITIES, license="apache-2.0", max_length=32768, prompts=_MMEB_PROMPTS,
    default_prompt_name="document", batch_size=4, max_batch_size=8)
register_checkpoints("vlm", {
    "intfloat/mmE5-mllama-11b-instruct": dict(
        dim=4096, options={"recipe": "mme5"}, license="llama3.2", max_length=8192,
        description="mmE5 (Llama 3.2 Vision 11B): multimodal E5, instruction prompts, last-token pooling"),
}, modalities=MODALITIES, prompts=_MMEB_PROMPTS, default_prompt_name="document", batch_size=2, max_batch_size=4)
register_refusals({
    name: "it is VLM2Vec on Phi-3.5-V, whose modelling code ships with the checkpoint (trust_remote_code), "
          "which zoo never runs. Use TIGER-Lab/VLM2Vec-Qwen2VL-2B or TIGER-Lab/VLM2Vec-Qwen2VL-7B: the same "
          "recipe on Qwen2-VL, which transformers implements."
    for name in ("TIGER-Lab/VLM2Vec-Full", "TIGER-Lab/VLM2Vec-LoRA")
})
