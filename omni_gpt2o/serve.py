"""`omni-gpt2o serve`: a local page to try a checkpoint, and a JSON endpoint for scripts.

A small FastAPI app and one plain HTML page (`static/index.html`), not Gradio: two small dependencies, a
page that fetches nothing from the internet, and every limit checked here on the server, where a script
cannot skip it.

    GET  /           the page: prompt, seed, steps, guidance, draft source and strength, Generate
    GET  /info       the model and the server's limits (the page reads them)
    POST /generate   JSON in; JSON out (`image`: PNG as base64, `seed`, `intermediates`), or the PNG's bytes
                     with `?format=png` (the seed in the `X-Seed` header)

The checkpoint is loaded once. One picture is drawn at a time; at most `queue` requests wait behind it, and
any more are answered 503 "busy" at once (the queue never grows). Errors come back as one line of JSON
(`{"error": ...}`), never a stack trace.
"""

import asyncio
import base64
import binascii
import importlib.util
import io
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from PIL import Image

from omni_gpt2o.config import DEFAULT_GUIDANCE
from omni_gpt2o.fileio import OmniError
from omni_gpt2o.pipeline import OmniGPT2oPipeline
from omni_gpt2o.utils import to_pil

logger = logging.getLogger(__name__)
PAGE = Path(__file__).parent / "static" / "index.html"


@dataclass
class ServeLimits:
    """What one request may ask for; checked on the server."""
    max_prompt_chars: int = 2000
    max_steps: int = 50
    max_guidance: float = 30.0
    max_upload_bytes: int = 8 * 1024 * 1024  # a draft picture, before base64
    max_upload_pixels: int = 4096 * 4096
    max_images: int = 4  # pictures per request
    queue: int = 4  # requests that may wait behind the one being drawn; more are answered "busy"


def _request_model(limits: ServeLimits):
    """The `POST /generate` body, with the limits as field constraints."""
    from pydantic import BaseModel, ConfigDict, Field

    class GenerateRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
        prompt: str = Field(min_length=1, max_length=limits.max_prompt_chars)
        seed: int | None = Field(None, ge=0, lt=2**63, description="none: a fresh random seed, returned")
        steps: int = Field(8, ge=1, le=limits.max_steps)
        guidance: float = Field(DEFAULT_GUIDANCE, ge=0, le=limits.max_guidance)
        draft: Literal["noise", "picture", "sd"] = "noise"
        picture: str | None = Field(None, description="with draft=picture: a PNG or JPEG, base64 (a data URL is "
                                                      "fine)", max_length=4 * limits.max_upload_bytes // 3 + 100)
        strength: float = Field(1.0, gt=0, le=1, description="how far from the draft picture to start (1: noise)")
        num_images: int = Field(1, ge=1, le=limits.max_images, description="pictures of the prompt, each with "
                                                                           "its own noise")
        intermediates: bool = Field(False, description="also return the first picture's prediction at every step")

    return GenerateRequest


class Busy(Exception):
    """The queue is full."""


class Drawer:
    """Draws one request at a time on the pipeline; admits at most `queue` waiting requests."""

    def __init__(self, pipe: OmniGPT2oPipeline, limits: ServeLimits):
        self.pipe, self.limits = pipe, limits
        self.lock = asyncio.Lock()
        self.admitted = 0  # drawing + waiting; only the event loop's thread touches it

    async def __call__(self, request) -> dict:
        if self.admitted > self.limits.queue:
            raise Busy
        self.admitted += 1
        try:
            async with self.lock:
                return await asyncio.to_thread(self.draw, request)
        finally:
            self.admitted -= 1

    def draw(self, request) -> dict:
        """A validated request's pictures as PNGs, the seed used and (if asked) the first one's every step."""
        if request.draft == "picture":
            draft = decode_picture(request.picture, self.limits)
        else:
            draft = "sd" if request.draft == "sd" else None  # None: from text alone
        steps: list[Image.Image] = []

        def keep(pipe, step, strength, tensors):
            steps.append(to_pil(tensors["prediction"][:1])[0])

        out = self.pipe(request.prompt, num_inference_steps=request.steps, guidance_scale=request.guidance,
                        num_images_per_prompt=request.num_images,
                        generator=None if request.seed is None else torch.Generator().manual_seed(request.seed),
                        draft=draft, draft_strength=request.strength if draft is not None else 1.0,
                        callback_on_step_end=keep if request.intermediates else None)
        images = [png_base64(image) for image in out.images]
        seed = request.seed if request.seed is not None else out.seed  # without one, the pipeline drew it
        return {"image": images[0], "images": images, "seed": seed, "width": out.images[0].width,
                "height": out.images[0].height, "intermediates": [png_base64(s) for s in steps]}


def decode_picture(text: str | None, limits: ServeLimits) -> Image.Image:
    """A base64 picture (or data URL) from a request, checked: decodable, not too large."""
    if not text:
        raise OmniError("draft=picture needs a picture")
    payload = text.split(",", 1)[1] if text.startswith("data:") else text
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise OmniError("the picture is not valid base64") from None
    if len(raw) > limits.max_upload_bytes:
        raise OmniError(f"the picture is larger than {limits.max_upload_bytes // 2**20} MB")
    try:
        picture = Image.open(io.BytesIO(raw))
        if picture.width * picture.height > limits.max_upload_pixels:
            raise OmniError(f"the picture has more than {limits.max_upload_pixels} pixels")
        picture.load()
    except (OSError, Image.DecompressionBombError, SyntaxError):
        raise OmniError("the picture could not be read (a PNG or JPEG, please)") from None
    return picture


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _one_line(err: Exception) -> str:
    """A pydantic validation error as one line: the first problem, with the field it is about."""
    errors = getattr(err, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return f"{where}: {first.get('msg', 'invalid')}" if where else first.get("msg", "invalid request")
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def create_app(pipe: OmniGPT2oPipeline, limits: ServeLimits | None = None, name: str = "model"):
    """The FastAPI app around a loaded pipeline."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    limits = limits or ServeLimits()
    GenerateRequest = _request_model(limits)
    drawer = Drawer(pipe, limits)
    page = PAGE.read_text(encoding="utf-8")
    app = FastAPI(title="Omni-GPT2o", docs_url=None, redoc_url=None, openapi_url=None)
    body_limit = 4 * limits.max_upload_bytes // 3 + 64 * 1024

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.middleware("http")
    async def refuse_large_bodies(request: Request, call_next):
        length = request.headers.get("content-length")
        if request.method == "POST" and length is None:  # a body of unknown size could be any size
            return error(411, "send the request's length (Content-Length)")
        if length is not None and (not length.isdigit() or int(length) > body_limit):
            return error(413, f"the request is larger than {body_limit // 2**20} MB")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        return error(422, _one_line(err))

    @app.exception_handler(Exception)
    async def failed(request: Request, err: Exception):
        logger.exception("generation failed")  # the stack trace stays in the server's log
        return error(500, f"generation failed: {_one_line(err)}")

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.get("/info")
    async def info() -> dict:
        return {"model": name, "image_size": pipe.model.config.image_size, "limits": asdict(limits),
                "default_guidance": DEFAULT_GUIDANCE, "sd_available": importlib.util.find_spec("diffusers") is not None}

    @app.post("/generate")
    async def generate(body: GenerateRequest, format: Literal["json", "png"] = "json"):
        if not math.isfinite(body.guidance):
            return error(422, "guidance: must be a finite number")
        try:
            result = await drawer(body)
        except Busy:
            return error(503, f"busy: {limits.queue + 1} requests are already in line; try again shortly")
        except (OmniError, ValueError) as err:
            return error(400, _one_line(err))
        if format == "png":
            return Response(base64.b64decode(result["image"]), media_type="image/png",
                            headers={"X-Seed": str(result["seed"])})
        return result

    return app


def serve(checkpoint: str, host: str = "127.0.0.1", port: int = 7860, device: str = "auto",
          precision: str = "auto", limits: ServeLimits | None = None, draft_config=None) -> None:
    """Load the checkpoint once and serve the page until Ctrl-C."""
    try:
        import uvicorn
    except ImportError:
        raise OmniError("serve needs FastAPI and uvicorn: pip install 'omni-gpt2o[serve]'") from None
    pipe = OmniGPT2oPipeline.from_pretrained(checkpoint, device=device, precision=precision,
                                             draft_config=draft_config)
    app = create_app(pipe, limits, name=Path(checkpoint).name)
    if host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("serving on %s: anyone who can reach this machine can use the model", host)
    print(f"serving {checkpoint} on http://{'[' + host + ']' if ':' in host else host}:{port} (Ctrl-C stops)",
          flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
