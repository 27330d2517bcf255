"""The ryla-gen server side: the job API, its executors, and the Modal deployment.

Modules (imported on demand, so ``ryla_gen_modal.app`` stays light for every container):

* :mod:`ryla_gen_modal.server` -- ``create_app(executor, token=...)``: the FastAPI job API.
* :mod:`ryla_gen_modal.jobs` -- ``LocalExecutor`` (in-process over a ComfyUI) and
  ``ModalExecutor`` (spawns the GPU worker), plus ``run_job``, the one code path that
  drives ComfyUI through :class:`ryla_gen.providers.comfyui.ComfyUIProvider`.
* :mod:`ryla_gen_modal.loras` -- safe LoRA storage; :mod:`ryla_gen_modal.downloads` --
  manifest downloads into a models folder; :mod:`ryla_gen_modal.modelcheck` -- which
  files a graph needs.
* :mod:`ryla_gen_modal.comfy_process` -- ComfyUI as a supervised child process.
* :mod:`ryla_gen_modal.config` -- pinned versions and deploy knobs;
  :mod:`ryla_gen_modal.app` -- the Modal app (``modal deploy -m ryla_gen_modal.app``).

Run the API locally with ``python -m ryla_gen_modal serve --comfyui-url URL``.
"""

from ryla_gen._version import __version__

__all__ = ["__version__"]
