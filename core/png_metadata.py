"""What a stored PNG says about how it was drawn, in the chunks other tools read.

Every picture an engine draws, and the paired image, carries two text chunks:

- ``parameters``: the AUTOMATIC1111 web UI's format, which image viewers, Civitai, ComfyUI loaders and
  "PNG info" tabs read::

      a red circle
      Negative prompt: blurry
      Steps: 20, Seed: 42, Size: 88x48, Model: diffusion-shapes-32-v1, Engine: diffusion, Aspect: 16:9

- ``imaginebot``: the same and more as JSON (engine, version, index, width, height, aspect, strength,
  LoRAs, cropped, text only), for our own tools and ``/show``.

:func:`read_parameters` reads both back. Pictures carry no job id or time: the same settings give the
same file.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, PngImagePlugin

from core.jobs import EngineResult, JobRecord

PARAMETERS_CHUNK = "parameters"
IMAGINEBOT_CHUNK = "imaginebot"
NEGATIVE_PREFIX = "Negative prompt:"
# One "Key: value" of the settings line; a value with a comma or colon is quoted (as A1111 writes it).
_FIELD = re.compile(r'\s*([\w][\w \-/]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


@dataclass
class PngParameters:
    """What one PNG records: the prompts, the A1111 settings line's fields and the JSON extras."""

    prompt: str
    negative_prompt: str | None
    #: The settings line, in order: ``{"Steps": "20", "Seed": "42", "Size": "88x48", ...}``.
    fields: dict[str, str]
    extra: dict[str, Any] = field(default_factory=dict)

    def a1111_text(self) -> str:
        """The ``parameters`` chunk's text."""
        lines = [self.prompt]
        if self.negative_prompt:
            lines.append(f"{NEGATIVE_PREFIX} {self.negative_prompt}")
        lines.append(", ".join(f"{key}: {_quoted(value)}" for key, value in self.fields.items()))
        return "\n".join(lines)

    def pnginfo(self) -> PngImagePlugin.PngInfo:
        """Both chunks for :meth:`PIL.Image.Image.save` (text outside Latin-1 goes as iTXt)."""
        info = PngImagePlugin.PngInfo()
        info.add_text(PARAMETERS_CHUNK, self.a1111_text())
        info.add_text(IMAGINEBOT_CHUNK, json.dumps(self.extra, ensure_ascii=False, sort_keys=True))
        return info


def _quoted(value: str) -> str:
    return json.dumps(value, ensure_ascii=False) if any(c in value for c in ',:"\n') else value


def picture_parameters(
    record: JobRecord, result: EngineResult, index: int, image: Image.Image
) -> PngParameters:
    """The metadata of picture ``index`` (0-based) that ``result``'s engine drew for ``record``."""
    request = record.request
    fields = {
        "Steps": str(record.steps),
        "Seed": str(record.seeds[index]),
        "Size": f"{image.width}x{image.height}",
        "Model": result.version,
        "Engine": result.engine,
    }
    if request.aspect:
        fields["Aspect"] = request.aspect
    if request.image_key and not result.text_only:
        fields["Denoising strength"] = f"{request.strength:g}" if request.strength is not None else "default"
    if request.loras:
        fields["Lora"] = ", ".join(f"{lora.name}:{lora.weight:g}" for lora in request.loras)
    extra = {
        "engine": result.engine,
        "version": result.version,
        "index": index,
        "count": request.count,
        "seed": record.seeds[index],
        "steps": record.steps,
        "width": image.width,
        "height": image.height,
        "aspect": request.aspect,
        "model": request.model,
        "dfgan_model": request.dfgan_model,
        "strength": request.strength if request.image_key else None,
        "loras": [[lora.name, lora.weight] for lora in request.loras],
        "cropped": result.cropped,
        "text_only": result.text_only,
    }
    return PngParameters(request.prompt, request.negative_prompt, fields, extra)


def pair_parameters(record: JobRecord, results: list[EngineResult]) -> PngParameters:
    """The metadata of ``record``'s paired image: the job's settings and every engine's version."""
    request = record.request
    fields = {
        "Steps": str(record.steps),
        "Seed": str(record.seed),
        "Size": f"{record.width}x{record.height}",
        "Model": ", ".join(result.version for result in results),
        "Engine": ", ".join(result.engine for result in results),
        "Batch size": str(request.count),
    }
    if request.aspect:
        fields["Aspect"] = request.aspect
    extra = {
        "job_id": record.id,
        "seed": record.seed,
        "seeds": record.seeds,
        "steps": record.steps,
        "width": record.width,
        "height": record.height,
        "aspect": request.aspect,
        "model": request.model,
        "dfgan_model": request.dfgan_model,
        "engines": {result.engine: result.version for result in results},
    }
    return PngParameters(request.prompt, request.negative_prompt, fields, extra)


def parse_a1111(text: str) -> tuple[str, str | None, dict[str, str]]:
    """(prompt, negative prompt, settings fields) of a ``parameters`` chunk's text."""
    lines = text.split("\n")
    fields: dict[str, str] = {}
    found = [(m.group(1), m.group(2)) for m in _FIELD.finditer(lines[-1])]
    if len(found) >= 3:  # A1111's own rule for "the last line is the settings line"
        lines = lines[:-1]
        fields = {key.strip(): _unquoted(value.strip()) for key, value in found}
    negative: str | None = None
    for i, line in enumerate(lines):
        if line.startswith(NEGATIVE_PREFIX):
            negative = "\n".join([line[len(NEGATIVE_PREFIX) :].strip(), *lines[i + 1 :]])
            lines = lines[:i]
            break
    return "\n".join(lines), negative, fields


def _unquoted(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            return str(json.loads(value))
        except ValueError:
            return value[1:-1]
    return value


def read_parameters(png: bytes) -> dict[str, Any]:
    """What a PNG says about how it was drawn: ``prompt``, ``negative_prompt`` (None when none), the
    settings line's fields under their own names (``Steps``, ``Seed``, ``Size``, ``Model``, ``Engine``,
    …, as text) and ``imaginebot`` (the JSON chunk, ``{}`` when absent). A PNG without a
    ``parameters`` chunk gives ``{}``."""
    with Image.open(io.BytesIO(png)) as image:
        chunks = dict(getattr(image, "text", None) or image.info)
    text = chunks.get(PARAMETERS_CHUNK)
    if not isinstance(text, str):
        return {}
    prompt, negative, fields = parse_a1111(text)
    try:
        extra = json.loads(chunks.get(IMAGINEBOT_CHUNK) or "{}")
    except ValueError:
        extra = {}
    return {"prompt": prompt, "negative_prompt": negative, **fields, "imaginebot": extra}
