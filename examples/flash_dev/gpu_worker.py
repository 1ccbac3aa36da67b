# gpu serverless worker (runpod_flash era, as `flash init` writes it).
# run with: flash-tui dev
from runpod_flash import Endpoint, GpuType


@Endpoint(name="gpu_worker", gpu=GpuType.ANY, workers=(0, 2))
async def gpu_hello(input_data: dict) -> dict:
    """GPU worker: says which device would run the work (torch if the worker has it)."""
    import platform

    # Imported here, as upstream's template does: RunPod's GPU images ship torch; a local
    # worker without it still answers (it runs on this machine's CPU anyway).
    try:
        import torch

        available = bool(torch.cuda.is_available())
        device = torch.cuda.get_device_name(0) if available else "cpu (torch)"
    except ImportError:
        available, device = False, "cpu (no torch)"
    return {
        "message": input_data.get("message", "Hello from GPU worker!"),
        "gpu": {"available": available, "name": device},
        "python_version": platform.python_version(),
    }
