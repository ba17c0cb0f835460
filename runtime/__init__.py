"""creps.runtime: generate images from a bundle with numpy and ONNX Runtime or TensorRT (never torch).

    from creps.runtime import Runtime
    runtime = Runtime("bundles/ffhq256", backend="auto", max_memory=512 << 20)
    images = runtime.generate(seeds=[0, 1], size=(2048, 512), psi=0.7)  # (2, 512, 2048, 3) uint8
    runtime.save(["a.png", "b.png"], seeds=[0, 1], size=(8192, 2048))    # streamed, flat memory
    z = runtime.z([0, 1])                                                 # (2, z_dim): the seeds' latents
    images = runtime.generate(z=(z[:1] + z[1:]) / 2)                     # latents of the app (a blend)
    images = runtime.generate(ws=runtime.mapping(z, psi=0.7))            # or ws past the mapping
    runtime.backend_name                                                  # what "auto" chose
    Runtime()                                                             # the bundled default model
"""

from creps.errors import BundleError
from creps.runtime.backends import Backend, BackendUnavailable
from creps.runtime.bundle import Bundle, read_bundle
from creps.runtime.generate import Runtime

__all__ = ["Backend", "BackendUnavailable", "Bundle", "BundleError", "Runtime", "read_bundle"]
