"""Settings: arguments win, ``RYLA_GEN_*`` environment variables fill the rest."""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, Field, SecretStr, TypeAdapter, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from ryla_gen._constants import (
    DEFAULT_COMFYUI_URL,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_JOB_TIMEOUT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_RUNPOD_BASE_URL,
)
from ryla_gen._http import check_token
from ryla_gen.errors import ConfigurationError

__all__ = ["PROVIDERS", "Settings"]

ProviderName = Literal["comfyui", "modal", "runpod"]
PROVIDERS: tuple[str, ...] = ("comfyui", "modal", "runpod")

_URL = TypeAdapter(AnyHttpUrl)


class Settings(BaseSettings):
    """Every setting of the client. Each field ``x`` is read from ``RYLA_GEN_X``.

    ==================================  ============================================
    variable                            meaning
    ==================================  ============================================
    ``RYLA_GEN_PROVIDER``               ``comfyui`` (default), ``modal`` or ``runpod``
    ``RYLA_GEN_COMFYUI_URL``            ComfyUI base URL (default http://127.0.0.1:8188)
    ``RYLA_GEN_MODAL_URL``              base URL of the deployed (or local) ryla-gen app
    ``RYLA_GEN_MODAL_TOKEN``            its bearer token
    ``RYLA_GEN_RUNPOD_ENDPOINT_ID``     RunPod serverless endpoint id
    ``RYLA_GEN_RUNPOD_API_KEY``         RunPod API key
    ``RYLA_GEN_RUNPOD_BASE_URL``        default https://api.runpod.ai/v2
    ``RYLA_GEN_RUNPOD_EXECUTION_TIMEOUT``  RunPod policy.executionTimeout, seconds
    ``RYLA_GEN_RUNPOD_TTL``             RunPod policy.ttl, seconds
    ``RYLA_GEN_RUNPOD_WEBHOOK``         URL RunPod calls when a job ends
    ``RYLA_GEN_TIMEOUT``                seconds one generate()/wait() may take (600)
    ``RYLA_GEN_CONNECT_TIMEOUT``        seconds to open a connection (10)
    ``RYLA_GEN_REQUEST_TIMEOUT``        seconds one HTTP request may take (60)
    ``RYLA_GEN_MAX_RETRIES``            retries of a safe request (4)
    ``RYLA_GEN_POLL_INTERVAL``          seconds between status polls (1.0)
    ``RYLA_GEN_VALIDATE``               validate graphs locally before sending (true)
    ==================================  ============================================
    """

    model_config = SettingsConfigDict(env_prefix="RYLA_GEN_", extra="forbid")

    provider: ProviderName = "comfyui"
    comfyui_url: str = DEFAULT_COMFYUI_URL
    modal_url: str | None = None
    modal_token: SecretStr | None = None
    runpod_endpoint_id: str | None = None
    runpod_api_key: SecretStr | None = None
    runpod_base_url: str = DEFAULT_RUNPOD_BASE_URL
    runpod_execution_timeout: float | None = Field(default=None, gt=0)
    runpod_ttl: float | None = Field(default=None, gt=0)
    runpod_webhook: str | None = None
    timeout: float | None = Field(default=DEFAULT_JOB_TIMEOUT, gt=0)
    connect_timeout: float = Field(default=DEFAULT_CONNECT_TIMEOUT, gt=0)
    request_timeout: float = Field(default=DEFAULT_REQUEST_TIMEOUT, gt=0)
    max_retries: int = Field(default=DEFAULT_MAX_RETRIES, ge=0, le=20)
    poll_interval: float = Field(default=DEFAULT_POLL_INTERVAL, gt=0)
    validate_graphs: bool = Field(default=True, validation_alias="RYLA_GEN_VALIDATE")

    @classmethod
    def load(cls, **overrides: object) -> Settings:
        """Settings from arguments (``None`` means "not given") over the environment.

        Raises :class:`ConfigurationError` naming the variable for anything malformed,
        missing for the chosen provider, or contradictory.
        """
        given = {k: v for k, v in overrides.items() if v is not None}
        if "validate_graphs" in given:
            given["RYLA_GEN_VALIDATE"] = given.pop("validate_graphs")
        try:
            settings = cls(**given)  # type: ignore[arg-type]
        except ValidationError as exc:
            first = exc.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else "?"
            var = field if field.startswith("RYLA_GEN_") else f"RYLA_GEN_{field.upper()}"
            if field not in cls.model_fields and not field.startswith("RYLA_GEN_"):
                raise ConfigurationError(f"Unknown setting {field!r}.", variable=field) from None
            raise ConfigurationError(
                f"{var} (or the {field!r} argument) is invalid: {first['msg']} "
                f"(got {first.get('input')!r}). "
                + ("Use one of: " + ", ".join(PROVIDERS) + "." if field == "provider" else ""),
                variable=var,
            ) from None
        settings.check()
        return settings

    def check(self) -> None:
        """Raise :class:`ConfigurationError` if the chosen provider lacks what it needs."""
        self._url("comfyui_url", self.comfyui_url)
        self._url("runpod_base_url", self.runpod_base_url)
        if self.provider == "modal":
            if not self.modal_url:
                raise ConfigurationError(
                    "The modal provider needs the app's URL: set RYLA_GEN_MODAL_URL (printed by "
                    "`modal deploy`, or http://127.0.0.1:PORT for `ryla-gen serve`).",
                    variable="RYLA_GEN_MODAL_URL",
                )
            self._url("modal_url", self.modal_url)
            if not self.modal_token:
                raise ConfigurationError(
                    "The modal provider needs the app's bearer token: set RYLA_GEN_MODAL_TOKEN "
                    "(the RYLA_GEN_API_TOKEN value of the app's secret).",
                    variable="RYLA_GEN_MODAL_TOKEN",
                )
        if self.provider == "runpod":
            if not self.runpod_endpoint_id:
                raise ConfigurationError(
                    "The runpod provider needs an endpoint: set RYLA_GEN_RUNPOD_ENDPOINT_ID.",
                    variable="RYLA_GEN_RUNPOD_ENDPOINT_ID",
                )
            if not self.runpod_api_key:
                raise ConfigurationError(
                    "The runpod provider needs an API key: set RYLA_GEN_RUNPOD_API_KEY.",
                    variable="RYLA_GEN_RUNPOD_API_KEY",
                )
        if self.runpod_webhook:
            self._url("runpod_webhook", self.runpod_webhook)
        if self.modal_token is not None:
            check_token(self.modal_token.get_secret_value(), "RYLA_GEN_MODAL_TOKEN")
        if self.runpod_api_key is not None:
            check_token(self.runpod_api_key.get_secret_value(), "RYLA_GEN_RUNPOD_API_KEY")

    @staticmethod
    def _url(field: str, value: str) -> None:
        try:
            _URL.validate_python(value)
        except ValidationError:
            var = f"RYLA_GEN_{field.upper()}"
            raise ConfigurationError(
                f"{var} must be an http(s) URL, got {value!r}.", variable=var
            ) from None
