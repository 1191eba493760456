"""kdn: load precomputed, compressed KV caches (`.kv` files) into an inference engine's KV memory
from Python, over the installed C library (libkdn) through ctypes; no compiled extension.

    import kdn
    cache = kdn.open("/kdn/llama3-8b/legal/contract.kv")   # header only: cache.info
    cache.expect_model(my_model)                            # never load KV into the wrong model
    cache.load(kdn.Paged(kv_caches, block_table))           # vLLM-shaped paged cache
    k, v = cache.numpy()                                    # or cache.torch()

Errors raise kdn.Error (status: a kdn.Status, message: the library's). The library is found
through $KDN_LIBRARY, the prefix the package was installed into, or the system's search path.
"""
from ._tensor import DTYPE_NAMES
from .core import (Cache, CacheInfo, Context, Contiguous, Model, Paged, Prefix, blend_load,
                   context, find_prefix, library_path, open, prefix_hashes, rope_shift, save,
                   scatter_rows, select_deviation, version)
from .errors import Error, InvalidArgument, Status

__version__ = "0.1.0"

__all__ = [
    "Cache", "CacheInfo", "Context", "Contiguous", "DTYPE_NAMES", "Error", "InvalidArgument",
    "Model", "Paged", "Prefix", "Status", "blend_load", "context", "find_prefix", "library_path",
    "open", "prefix_hashes", "rope_shift", "save", "scatter_rows", "select_deviation", "version",
]
