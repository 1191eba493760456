"""The C library (libkdn) through ctypes: where it is found, and the C types and prototypes of
include/kdn/kdn.h. Nothing here is public; the package's modules wrap it."""
import ctypes
import ctypes.util
import os
import pathlib
import threading

# Bumped by the header on any incompatible change; the package is written against this one.
API_VERSION = 1
PREFIX_HASH_HEX_BYTES = 33  # KDN_PREFIX_HASH_HEX_BYTES: 32 hex digits and a NUL

ENV_LIBRARY = "KDN_LIBRARY"


class ModelDesc(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("n_layers", ctypes.c_uint32),
        ("n_heads", ctypes.c_uint32),
        ("n_kv_heads", ctypes.c_uint32),
        ("head_dim", ctypes.c_uint32),
        ("dtype", ctypes.c_int),
        ("rope_style", ctypes.c_int),
        ("rotary_dim", ctypes.c_uint32),
        ("rope_theta", ctypes.c_float),
        ("rope_scale", ctypes.c_float),
    ]


class CacheInfo(ctypes.Structure):
    _fields_ = [
        ("model", ModelDesc),
        ("fingerprint", ctypes.c_uint8 * 16),
        ("n_tokens", ctypes.c_uint32),
        ("position_offset", ctypes.c_uint32),
        ("tokens", ctypes.POINTER(ctypes.c_uint32)),
        ("codec", ctypes.c_char * 32),
        ("file_bytes", ctypes.c_uint64),
        ("decoded_bytes", ctypes.c_uint64),
        ("fast_path", ctypes.c_int),
    ]


class Dest(ctypes.Structure):
    _fields_ = [
        ("dtype", ctypes.c_int),
        ("n_layers", ctypes.c_uint32),
        ("k_base", ctypes.POINTER(ctypes.c_void_p)),
        ("v_base", ctypes.POINTER(ctypes.c_void_p)),
        ("n_kv_heads", ctypes.c_uint32),
        ("head_dim", ctypes.c_uint32),
        ("block_size", ctypes.c_uint32),
        ("block_stride", ctypes.c_int64),
        ("token_stride", ctypes.c_int64),
        ("head_stride", ctypes.c_int64),
        ("block_table", ctypes.POINTER(ctypes.c_int32)),
        ("n_block_table", ctypes.c_uint32),
        ("slot_mapping", ctypes.POINTER(ctypes.c_int64)),
        ("n_slots", ctypes.c_uint32),
        ("capacity_tokens", ctypes.c_uint32),
    ]


class SaveOpts(ctypes.Structure):
    _fields_ = [
        ("codec", ctypes.c_char_p),
        ("chunk_tokens", ctypes.c_uint32),
        ("fsync", ctypes.c_int),
    ]


_status = ctypes.c_int
_p = ctypes.c_void_p
_u32 = ctypes.c_uint32
_u32p = ctypes.POINTER(ctypes.c_uint32)

# name: (restype, argtypes)
_PROTOTYPES = {
    "kdn_api_version": (ctypes.c_int, []),
    "kdn_version_string": (ctypes.c_char_p, []),
    "kdn_last_error": (ctypes.c_char_p, []),
    "kdn_status_name": (ctypes.c_char_p, [ctypes.c_int]),
    "kdn_ctx_create": (_status, [ctypes.c_int, ctypes.POINTER(_p)]),
    "kdn_ctx_destroy": (None, [_p]),
    "kdn_ctx_device": (ctypes.c_int, [_p]),
    "kdn_open": (_status, [_p, ctypes.c_char_p, ctypes.POINTER(_p)]),
    "kdn_close": (None, [_p]),
    "kdn_info": (_status, [_p, ctypes.POINTER(CacheInfo)]),
    "kdn_expect_model": (_status, [_p, ctypes.POINTER(ModelDesc)]),
    "kdn_dest_contiguous": (_status, [ctypes.POINTER(Dest), ctypes.c_int, _u32,
                                      ctypes.POINTER(ctypes.c_void_p),
                                      ctypes.POINTER(ctypes.c_void_p), _u32, _u32, _u32]),
    "kdn_dest_paged": (_status, [ctypes.POINTER(Dest), ctypes.c_int, _u32,
                                 ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p),
                                 _u32, _u32, _u32, ctypes.c_int, ctypes.POINTER(ctypes.c_int32),
                                 _u32]),
    "kdn_load": (_status, [_p, _u32, _u32, ctypes.POINTER(Dest), _u32, _p]),
    "kdn_layer_wait": (_status, [_p, _u32]),
    "kdn_layer_event": (_p, [_p, _u32]),
    "kdn_sync": (_status, [_p]),
    "kdn_save": (_status, [_p, ctypes.POINTER(ModelDesc), _u32p, _u32, _u32,
                           ctypes.POINTER(Dest), ctypes.POINTER(SaveOpts), ctypes.c_char_p]),
    "kdn_find_prefix": (_status, [ctypes.c_char_p, ctypes.POINTER(ModelDesc), _u32p, _u32, _u32,
                                  ctypes.c_char_p, ctypes.c_size_t, _u32p]),
    "kdn_prefix_hashes": (_status, [ctypes.POINTER(ModelDesc), _u32p, _u32, _u32,
                                    ctypes.c_char_p, _u32, _u32p]),
    "kdn_cache_prefix_hashes": (_status, [_p, ctypes.c_char_p, _u32, _u32p, _u32p]),
    "kdn_rope_shift": (_status, [_p, ctypes.POINTER(ModelDesc), ctypes.POINTER(Dest), _u32, _u32,
                                 _u32, _u32, ctypes.c_int64, _p]),
    "kdn_blend_load": (_status, [ctypes.POINTER(_p), _u32, _u32p, _u32, ctypes.POINTER(ModelDesc),
                                 _u32, _u32, ctypes.POINTER(Dest), _p]),
    "kdn_select_deviation": (_status, [_p, _p, ctypes.POINTER(Dest), _u32, ctypes.c_int, _u32,
                                       _u32, ctypes.c_float, _u32p, _u32p,
                                       ctypes.POINTER(ctypes.c_float), _p]),
    "kdn_scatter_rows": (_status, [_p, _p, _u32p, _u32, ctypes.POINTER(Dest), _u32, ctypes.c_int,
                                   _p]),
}


def _installed_candidates():
    """libkdn beside an installed package: CMake's install() writes _install_paths.py with the
    library directory relative to this package's directory."""
    here = pathlib.Path(__file__).resolve().parent
    try:
        from . import _install_paths  # written by `cmake --install` only
    except ImportError:
        return []
    libdir = (here / _install_paths.LIBDIR_FROM_PACKAGE).resolve()
    return [libdir / name for name in ("libkdn.so." + _install_paths.SOVERSION, "libkdn.so")]


def _find_library():
    """Where libkdn is: $KDN_LIBRARY, then the install prefix this package was installed into,
    then the system's library search (ctypes.util.find_library), then /usr/local/lib (the default
    prefix, which ldconfig may not list yet)."""
    tried = []
    env = os.environ.get(ENV_LIBRARY)
    if env:
        return env, [ENV_LIBRARY + "=" + env]
    for p in _installed_candidates():
        tried.append(str(p))
        if p.exists():
            return str(p), tried
    found = ctypes.util.find_library("kdn")
    tried.append("find_library('kdn')")
    if found:
        return found, tried
    for p in (pathlib.Path("/usr/local/lib/libkdn.so.0"), pathlib.Path("/usr/local/lib/libkdn.so")):
        tried.append(str(p))
        if p.exists():
            return str(p), tried
    return None, tried


_lock = threading.Lock()
_lib = None
_lib_path = None


def library():
    """The loaded libkdn (loaded on first use, so that importing the package never fails)."""
    global _lib, _lib_path
    with _lock:
        if _lib is not None:
            return _lib
        path, tried = _find_library()
        if path is None:
            raise OSError("libkdn not found (tried: " + ", ".join(tried) +
                          "); set " + ENV_LIBRARY + " to the path of libkdn.so")
        lib = ctypes.CDLL(path)
        for name, (restype, argtypes) in _PROTOTYPES.items():
            fn = getattr(lib, name)
            fn.restype = restype
            fn.argtypes = argtypes
        version = lib.kdn_api_version()
        if version != API_VERSION:
            raise OSError(f"{path} has C API version {version}; this package needs {API_VERSION}")
        _lib, _lib_path = lib, path
        return lib


def library_path():
    library()
    return _lib_path
