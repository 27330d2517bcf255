"""Providers: where the GPU work runs. One contract (:class:`AsyncProvider`), three backends.

=========  ==============================================  =============================
name       what it talks to                                settings
=========  ==============================================  =============================
comfyui    any ComfyUI server (HTTP + websocket)           ``RYLA_GEN_COMFYUI_URL``
modal      the ryla-gen Modal app's job API (or its        ``RYLA_GEN_MODAL_URL``,
           local twin, ``ryla-gen serve``)                 ``RYLA_GEN_MODAL_TOKEN``
runpod     RunPod serverless running worker-comfyui v5     ``RYLA_GEN_RUNPOD_ENDPOINT_ID``,
                                                           ``RYLA_GEN_RUNPOD_API_KEY``
=========  ==============================================  =============================
"""

from __future__ import annotations

import importlib
from typing import Any

from ryla_gen._http import RetryPolicy
from ryla_gen._settings import PROVIDERS, Settings
from ryla_gen.errors import ConfigurationError
from ryla_gen.providers._base import AsyncProvider, SubmittedJob

__all__ = ["PROVIDERS", "AsyncProvider", "SubmittedJob", "create_provider"]


def create_provider(settings: Settings) -> AsyncProvider:
    """The provider named by ``settings.provider``, configured from ``settings``."""
    retry = RetryPolicy(max_retries=settings.max_retries)
    common: dict[str, Any] = {
        "retry": retry,
        "connect_timeout": settings.connect_timeout,
        "request_timeout": settings.request_timeout,
        "poll_interval": settings.poll_interval,
    }
    if settings.provider == "comfyui":
        from ryla_gen.providers.comfyui import ComfyUIProvider

        return ComfyUIProvider(settings.comfyui_url, **common)
    if settings.provider == "modal":
        mod = importlib.import_module("ryla_gen.providers.modal")
        assert settings.modal_url and settings.modal_token
        provider: AsyncProvider = mod.ModalProvider(
            settings.modal_url,
            token=settings.modal_token.get_secret_value(),
            **common,
        )
        return provider
    if settings.provider == "runpod":
        mod = importlib.import_module("ryla_gen.providers.runpod")
        assert settings.runpod_endpoint_id and settings.runpod_api_key
        provider = mod.RunPodProvider(
            settings.runpod_endpoint_id,
            api_key=settings.runpod_api_key.get_secret_value(),
            base_url=settings.runpod_base_url,
            execution_timeout=settings.runpod_execution_timeout,
            ttl=settings.runpod_ttl,
            webhook=settings.runpod_webhook,
            **common,
        )
        return provider
    raise ConfigurationError(  # pragma: no cover - Settings already restricts the name
        f"Unknown provider {settings.provider!r}; use one of {', '.join(PROVIDERS)}.",
        variable="RYLA_GEN_PROVIDER",
    )
