"""HTTP plumbing shared by every provider: deadlines, safe retries, error mapping.

Retries live here and only here. A request is retried when doing so cannot run work
twice: always when the connection was never made, and on timeouts, 429 and 5xx only
when the caller marks the request ``idempotent`` (reads, uploads of content-addressed
files, submits with a client-chosen id that the provider de-duplicates).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)

from ryla_gen._constants import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_REQUEST_TIMEOUT,
    INITIAL_RETRY_DELAY,
    MAX_RETRY_DELAY,
)
from ryla_gen.errors import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    JobTimeoutError,
    NotFoundError,
    ProtocolError,
    ProviderUnavailableError,
    RateLimitError,
)

__all__ = ["HTTP", "Deadline", "RetryPolicy", "redact"]


class Deadline:
    """One point in time by which a whole call must be done. ``None`` means no limit."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._end = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        """Seconds left (never negative), or None for no limit."""
        if self._end is None:
            return None
        return max(0.0, self._end - time.monotonic())

    @property
    def expired(self) -> bool:
        """True once the deadline has passed."""
        return self._end is not None and time.monotonic() >= self._end

    def cap(self, seconds: float) -> float:
        """``seconds``, or what is left of the deadline if that is less."""
        left = self.remaining()
        return seconds if left is None else min(seconds, left)

    def __repr__(self) -> str:
        return f"Deadline(remaining={self.remaining()})"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently safe requests are retried."""

    max_retries: int = DEFAULT_MAX_RETRIES
    initial_delay: float = INITIAL_RETRY_DELAY
    max_delay: float = MAX_RETRY_DELAY

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to sleep before retry number ``attempt`` (1-based): Retry-After wins."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), 60.0)
        base: float = min(self.initial_delay * 2.0 ** (attempt - 1), self.max_delay)
        return base * (0.75 + random.random() * 0.5)


class _Retryable(Exception):
    """Internal: a response that may be retried (carries it for the final error)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None  # neither seconds nor an HTTP date: fall back to backoff
        return max(0.0, float(parsed.timestamp()) - time.time()) if parsed else None


def check_token(value: str, variable: str) -> str:
    """``value`` if it can be sent in an HTTP header as a bearer token.

    A token pasted with a trailing newline, or with non-ASCII characters, would otherwise
    fail every request with an encoding error. The message names the variable, never
    the value.
    """
    if not value or any(not 0x21 <= ord(c) <= 0x7E for c in value):
        raise ConfigurationError(
            f"{variable} must be printable ASCII without spaces or line breaks (check for a "
            "trailing newline when it was read from a file).",
            variable=variable,
        )
    return value


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with every non-empty secret replaced by ``***``."""
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


def _redact_json(value: Any, secrets: list[str]) -> Any:
    """``value`` (parsed JSON) with every secret replaced in every string inside it."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, list):
        return [_redact_json(v, secrets) for v in value]
    if isinstance(value, dict):
        return {redact(str(k), secrets): _redact_json(v, secrets) for k, v in value.items()}
    return value


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:2000]


def _server_message(body: Any) -> str:
    if isinstance(body, Mapping):
        for key in ("error", "detail", "message"):
            val = body.get(key)
            if isinstance(val, Mapping):
                val = val.get("message") or val
            if val:
                return str(val)
    return str(body)[:500] if body else ""


class HTTP:
    """An ``httpx.AsyncClient`` plus the retry policy and the error mapping.

    ``provider`` names the provider in error messages; ``secrets`` are scrubbed from them.
    """

    def __init__(
        self,
        base_url: str,
        *,
        provider: str,
        headers: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        client: httpx.AsyncClient | None = None,
        secrets: list[str] | None = None,
    ) -> None:
        self.provider = provider
        self.retry = retry or RetryPolicy()
        self.request_timeout = request_timeout
        self._secrets = [s for s in (secrets or []) if s]
        self._own_client = client is None
        self.client = client or httpx.AsyncClient(
            base_url=base_url,
            headers=dict(headers or {}),
            timeout=httpx.Timeout(request_timeout, connect=connect_timeout),
            follow_redirects=True,
        )
        if client is not None:
            self.client.base_url = httpx.URL(base_url)
            self.client.headers.update(dict(headers or {}))

    async def aclose(self) -> None:
        """Close the connection pool (if this object created it)."""
        if self._own_client:
            await self.client.aclose()

    async def request(
        self,
        method: str,
        url: str,
        *,
        idempotent: bool,
        deadline: Deadline | None = None,
        ok: tuple[int, ...] = (),
        timeout: float | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send one request with safe retries; return a 2xx response (or one in ``ok``).

        Raises the typed error for any other outcome: :class:`AuthenticationError`,
        :class:`NotFoundError`, :class:`RateLimitError`, :class:`ProviderUnavailableError`,
        :class:`JobTimeoutError` when ``deadline`` passes, or :class:`APIError`.
        """
        deadline = deadline or Deadline(None)
        policy = self.retry
        per_try = timeout or self.request_timeout  # large uploads/downloads may need more

        def retryable(exc: BaseException) -> bool:
            if isinstance(exc, _Retryable):
                code = exc.response.status_code
                return code == 429 or (idempotent and code >= 500)
            if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
                return True  # the request never reached the server
            if isinstance(exc, httpx.TransportError):
                return idempotent
            return False

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            ra = _retry_after(exc.response) if isinstance(exc, _Retryable) else None
            return deadline.cap(policy.delay(state.attempt_number, ra))

        def stop(state: RetryCallState) -> bool:
            if deadline.expired:
                return True
            exc = state.outcome.exception() if state.outcome else None
            if (
                isinstance(exc, _Retryable)
                and exc.response.status_code == 429
                and deadline.remaining() is not None
            ):
                # A 429 means "not accepted, come back later": keep coming back while
                # the call's deadline allows, unless the server asks for more than that.
                ra = _retry_after(exc.response)
                left = deadline.remaining() or 0.0
                return ra is not None and ra > left
            return bool(stop_after_attempt(policy.max_retries + 1)(state))

        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(retryable),
                wait=wait,
                stop=stop,
                reraise=True,
            ):
                with attempt:
                    if deadline.expired:
                        raise JobTimeoutError(
                            f"The deadline of {deadline.seconds} s passed before "
                            f"{method} {url} could be sent to {self.provider}."
                        )
                    timeout_s = deadline.cap(per_try)
                    try:
                        # httpx's timeouts are per read: bound the attempt as a whole, so
                        # an answer that trickles in cannot outlive the deadline.
                        response = await asyncio.wait_for(
                            self.client.request(
                                method,
                                url,
                                timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
                                **kwargs,
                            ),
                            timeout=timeout_s + 0.1,
                        )
                    except asyncio.TimeoutError:
                        raise httpx.ReadTimeout(
                            f"no complete answer within {timeout_s:.1f} s"
                        ) from None
                    if response.status_code == 429 or response.status_code >= 500:
                        raise _Retryable(response)
                    return self._check(response, ok)
        except _Retryable as exc:
            raise self._status_error(exc.response) from None
        except httpx.TimeoutException as exc:
            if deadline.expired:
                raise JobTimeoutError(
                    f"The deadline of {deadline.seconds} s passed while waiting for "
                    f"{self.provider} to answer {method} {url}."
                ) from exc
            raise ProviderUnavailableError(
                f"{self.provider} did not answer {method} {url} in time "
                f"({type(exc).__name__}). Check that the server is up and not overloaded.",
                provider=self.provider,
            ) from exc
        except httpx.TransportError as exc:
            raise ProviderUnavailableError(
                f"Could not reach {self.provider} at {self.client.base_url} "
                f"({type(exc).__name__}: {redact(str(exc), self._secrets)}). "
                "Check the URL and that the server is running.",
                provider=self.provider,
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _check(self, response: httpx.Response, ok: tuple[int, ...]) -> httpx.Response:
        if response.is_success or response.status_code in ok:
            return response
        raise self._status_error(response)

    def _status_error(self, response: httpx.Response) -> APIError:
        body = _redact_json(_body(response), self._secrets)
        code = response.status_code
        msg = redact(_server_message(body), self._secrets)
        where = f"{response.request.method} {response.request.url.path}"
        kw: dict[str, Any] = {"status_code": code, "body": body, "provider": self.provider}
        if code in (401, 403):
            return AuthenticationError(
                f"{self.provider} refused the credentials ({code} on {where}): {msg}. "
                "Check the token or API key in your settings.",
                **kw,
            )
        if code == 404:
            return NotFoundError(f"{self.provider}: not found ({where}): {msg}", **kw)
        if code == 429:
            return RateLimitError(
                f"{self.provider} is rate limiting ({where}) and retries ran out: {msg}. "
                "Slow down or raise your limits.",
                retry_after=_retry_after(response),
                **kw,
            )
        if code >= 500:
            return ProviderUnavailableError(
                f"{self.provider} kept failing with HTTP {code} on {where}: {msg}", **kw
            )
        return APIError(f"{self.provider} answered HTTP {code} on {where}: {msg}", **kw)

    @staticmethod
    def json(response: httpx.Response, provider: str) -> Any:
        """The response's JSON body, or :class:`ProtocolError` if it is not JSON."""
        try:
            return response.json()
        except ValueError as exc:
            raise ProtocolError(
                f"{provider} sent a malformed answer to {response.request.method} "
                f"{response.request.url.path} (not JSON): {response.text[:200]!r}",
                status_code=response.status_code,
                provider=provider,
            ) from exc
