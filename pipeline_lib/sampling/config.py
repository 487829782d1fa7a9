"""The ``sampler`` section: which backend generates, and with what settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from pipeline_lib.core.section import Section

class VllmConfig(Section):
    """How alignflow starts a vLLM server (not used with ``sampler.base_url``)."""

    port: int | None = Field(None, ge=1, le=65535, description="loopback port; null: a free one")
    startup_timeout_s: float = Field(300.0, gt=0, description="how long to wait for the server to be healthy")
    kv_cache_gib: float = Field(2.0, gt=0, description="CPU KV cache size (VLLM_CPU_KVCACHE_SPACE)")
    max_model_len: int | None = Field(4096, ge=16, description="context length the server allocates for")
    enforce_eager: bool = Field(True, description="skip graph compilation: ~25 s start instead of ~100 s on CPU")
    extra_args: list[str] = Field(default_factory=list, description="more `vllm serve` flags, passed as they are")
    keep_warm: int = Field(2, ge=0, description="servers kept running between stages of one run; 0: stop after each stage")


class SamplerConfig(Section):
    backend: Literal["auto", "hf", "vllm"] = Field(
        "auto", description="auto: vLLM when its environment is installed (or base_url is set), else HF"
    )
    base_url: str | None = Field(None, description="a running vLLM server to use; alignflow leaves it alone")
    base_urls: list[str] | None = Field(
        None, min_length=1, description="running vLLM servers of the model that share the shards; alignflow leaves them alone"
    )
    vllm: VllmConfig = Field(default_factory=VllmConfig)
    # Declared after the fields its check reads (a validator sees only the fields before it).
    replicas: int = Field(
        1, ge=1, description="vLLM servers alignflow starts per model, each on its share of the GPUs or CPU cores"
    )
    temperature: float = Field(0.8, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(128, ge=1)
    n: int = Field(1, ge=1, description="samples per prompt")
    batch_size: int = Field(32, ge=1, description="HF: sequences per generate call; vLLM: requests in flight")
    seed: int = 0

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None:
            _check_http(url)
        return url

    @field_validator("base_urls")
    @classmethod
    def _http_urls(cls, urls: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if urls is None:
            return None
        for url in urls:
            _check_http(url)
        if len(set(urls)) != len(urls):
            raise ValueError("lists a server more than once")
        if info.data.get("base_url"):
            raise ValueError("set base_url (one server) or base_urls (several), not both")
        if info.data.get("backend") == "hf":
            raise ValueError("base_urls point at vLLM servers; they cannot be used with backend 'hf'")
        return urls

    @field_validator("replicas")
    @classmethod
    def _replicas_are_started_vllm_servers(cls, replicas: int, info: ValidationInfo) -> int:
        if replicas == 1:
            return replicas
        if info.data.get("backend") == "hf":
            raise ValueError("replicas are vLLM servers; backend 'hf' generates in this process")
        if info.data.get("base_url") or info.data.get("base_urls"):
            raise ValueError("alignflow starts replicas itself, base_url/base_urls name servers that run already: set one")
        vllm = info.data.get("vllm")
        if vllm is not None and vllm.port is not None:
            raise ValueError(f"{replicas} servers cannot share sampler.vllm.port {vllm.port}; leave the port unset")
        return replicas

    @model_validator(mode="after")
    def _base_url_is_vllm(self) -> SamplerConfig:
        if self.base_url and self.backend == "hf":
            raise ValueError("base_url points at a vLLM server; it cannot be used with backend 'hf'")
        return self

    @property
    def servers(self) -> list[str]:
        """The running servers to use, base_url being the one-server case; empty: alignflow starts its own."""
        return self.base_urls or ([self.base_url] if self.base_url else [])


def _check_http(url: str) -> None:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"must start with http:// or https://, got {url!r}")
