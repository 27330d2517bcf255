"""Container warm-up: the models of chosen workflows load before the first user job."""

from __future__ import annotations

import pytest

from ryla_gen.graph import Graph
from ryla_gen.providers.comfyui import ComfyUIProvider
from ryla_gen_modal.config import DeployConfig
from ryla_gen_modal.warmup import WARMUP_WORKFLOWS, warm_up, warmup_request


@pytest.mark.parametrize("name", WARMUP_WORKFLOWS)
def test_warmup_job_is_small_and_loads_the_real_models(name: str) -> None:
    from ryla_gen.models import for_workflow

    request = warmup_request(name)
    Graph.from_api(request.graph).validate()
    latent = next(n for n in request.graph.values() if n["class_type"] == "EmptySD3LatentImage")
    assert (latent["inputs"]["width"], latent["inputs"]["height"]) == (256, 256)
    sampler = next(n for n in request.graph.values() if n["class_type"] == "KSampler")
    assert sampler["inputs"]["steps"] == 1
    # Every model file of the workflow is named by the warm-up graph, so all of them load.
    named = {v for n in request.graph.values() for v in n["inputs"].values() if isinstance(v, str)}
    wanted = {m.filename for m in for_workflow(name) if m.in_graph}
    assert wanted <= named


def test_unknown_or_image_workflows_cannot_be_warmed_up() -> None:
    with pytest.raises(ValueError, match="instantid"):
        warmup_request("instantid")
    with pytest.raises(ValueError, match="RYLA_GEN_WARMUP"):
        DeployConfig.from_env({"RYLA_GEN_WARMUP": "flux-dev, nope"})
    config = DeployConfig.from_env({"RYLA_GEN_WARMUP": "flux-dev, z-image-turbo"})
    assert config.warmup == ("flux-dev", "z-image-turbo")
    assert DeployConfig.from_env(config.worker_env()).warmup == config.warmup
    assert DeployConfig.from_env({}).warmup == ()


@pytest.mark.comfyui
async def test_failed_warmup_is_reported_not_raised(comfyui_url: str) -> None:
    # The test server holds placeholder weights: loading them fails, as a corrupt
    # volume would. The container must carry on, with the reason logged.
    provider = ComfyUIProvider(comfyui_url)
    try:
        report = await warm_up(provider, ["flux-schnell"], timeout=120)
    finally:
        await provider.aclose()
    assert report["flux-schnell"]["status"] == "failed"
    assert report["flux-schnell"]["error"]
    assert report["flux-schnell"]["seconds"] > 0
