"""Contexts, models, caches, destinations, save, prefix lookup and blending: the C API of
include/kdn/kdn.h, one Python call per C call, with the checks the C descriptors cannot carry
(a tensor's extent, its device) done here before the library is asked."""
import array
import ctypes
import dataclasses
import os
import threading

from . import _lib
from ._tensor import (BF16, DTYPE_NAMES, F16, F32, Tensor, as_tensor, dtype_code, host_ints,
                      is_torch)
from .errors import Error, InvalidArgument, Status, check

ROPE_STYLES = {"none": 0, "neox": 1, "gptj": 2}
_ROPE_NAMES = {v: k for k, v in ROPE_STYLES.items()}
_UINT32_MAX = 0xFFFFFFFF


def version():
    """The library's version string, e.g. 'kdn 0.1.0 (backends: cpu)'."""
    return _lib.library().kdn_version_string().decode()


def library_path():
    """The path of the libkdn this package loaded."""
    return _lib.library_path()


# --- models ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Model:
    """What KV depends on (kdn_model_desc). A cache is only ever loaded into the model that
    computed it: Cache.expect_model compares every field but n_heads."""
    name: str
    n_layers: int
    n_kv_heads: int
    head_dim: int
    dtype: str = "fp16"          # 'fp16', 'bf16' or 'fp32': the dtype the model computes KV in
    rope_style: str = "neox"     # 'neox', 'gptj' or 'none'
    rotary_dim: int = 0          # 0 = head_dim
    rope_theta: float = 10000.0
    rope_scale: float = 1.0
    n_heads: int = 0             # query heads, informational; 0 = n_kv_heads

    def __post_init__(self):
        object.__setattr__(self, "dtype", DTYPE_NAMES[dtype_code(self.dtype)])
        if not self.n_heads:
            object.__setattr__(self, "n_heads", self.n_kv_heads)
        if self.rope_style not in ROPE_STYLES:
            raise InvalidArgument(f"rope_style {self.rope_style!r}: one of {list(ROPE_STYLES)}")

    def _c(self):
        return _lib.ModelDesc(self.name.encode(), self.n_layers, self.n_heads,
                              self.n_kv_heads, self.head_dim, dtype_code(self.dtype),
                              ROPE_STYLES[self.rope_style], self.rotary_dim, self.rope_theta,
                              self.rope_scale)

    @classmethod
    def _from_c(cls, d):
        return cls(name=d.name.decode("utf-8", "replace"), n_layers=d.n_layers,
                   n_kv_heads=d.n_kv_heads, head_dim=d.head_dim, dtype=DTYPE_NAMES[d.dtype],
                   rope_style=_ROPE_NAMES[d.rope_style], rotary_dim=d.rotary_dim,
                   rope_theta=d.rope_theta, rope_scale=d.rope_scale, n_heads=d.n_heads)


# --- contexts -------------------------------------------------------------------------------------

class Context:
    """A kdn_ctx: device -1 is the CPU backend (host memory), device >= 0 that CUDA device
    (Error KDN_E_NO_DEVICE when the library has no CUDA backend or no such device). Caches opened
    through it keep the C context alive after close()."""

    def __init__(self, device=-1):
        lib = _lib.library()
        handle = ctypes.c_void_p()
        check(lib.kdn_ctx_create(int(device), ctypes.byref(handle)), f"context on device {device}")
        self._handle = handle
        self.device = lib.kdn_ctx_device(handle)

    def close(self):
        if self._handle:
            _lib.library().kdn_ctx_destroy(self._handle)
            self._handle = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone already
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def handle(self):
        if not self._handle:
            raise InvalidArgument("context is closed")
        return self._handle


_contexts = {}
_contexts_lock = threading.Lock()


def context(device=-1):
    """The process's shared context for `device` (created on first use)."""
    with _contexts_lock:
        ctx = _contexts.get(device)
        if ctx is None:
            ctx = _contexts[device] = Context(device)
        return ctx


def _cuda_stream(device, stream):
    """The stream a CUDA call is enqueued on: the caller's, else torch's current stream on that
    device (when torch is loaded), else the legacy default stream (None)."""
    if stream is not None or device < 0:
        return stream
    import sys
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.current_stream(device).cuda_stream or None
    return None


# --- destinations ---------------------------------------------------------------------------------

def _per_layer(x, what, inner_shape_len, bf16):
    """[(address or None, shape, strides)] per layer, and the Tensors to keep alive, for a single
    tensor with a leading layer dimension or a list of per-layer tensors (None entries skip)."""
    if isinstance(x, (list, tuple)):
        out, keep = [], []
        for i, e in enumerate(x):
            if e is None:
                out.append(None)
                continue
            t = as_tensor(e, f"{what}[{i}]", bf16)
            if len(t.shape) != inner_shape_len:
                raise InvalidArgument(f"{what}[{i}]: {t.describe()}: {inner_shape_len} dimensions "
                                      "expected")
            out.append((t.ptr, t.shape, t.strides, t))
            keep.append(t)
        return out, keep
    t = as_tensor(x, what, bf16)
    if len(t.shape) != inner_shape_len + 1:
        raise InvalidArgument(f"{what}: {t.describe()}: {inner_shape_len + 1} dimensions expected "
                              "(layers first), or a list of per-layer tensors")
    return [(t.sub(i), t.shape[1:], t.strides[1:], t) for i in range(t.shape[0])], [t]


def _dense_strides(shape):
    strides, acc = [], 1
    for n in reversed(shape):
        strides.append(acc)
        acc *= n
    return tuple(reversed(strides))


def _check_dense(shape, strides, what, t):
    """Every dimension of size > 1 at its row-major stride (what the C layouts address)."""
    for n, s, want in zip(shape, strides, _dense_strides(shape)):
        if n > 1 and s != want:
            raise InvalidArgument(f"{what}: {t.describe()}: each layer must be row-major "
                                  "(contiguous); use .contiguous() / np.ascontiguousarray")


class _Layout:
    """What the C API calls a kdn_dest: where token t, head h, dim d of layer l, K or V, lives.
    Built from tensors; turned into the C descriptor for each call (its pointer arrays live
    only during the call: the library copies what it needs)."""

    def _init_layers(self, k, v, inner_len, dtype):
        bf16 = dtype is not None and dtype_code(dtype) == BF16
        ks, keep_k = _per_layer(k, "k", inner_len, bf16) if k is not None else (None, [])
        vs, keep_v = _per_layer(v, "v", inner_len, bf16) if v is not None else (None, [])
        if ks is None and vs is None:
            raise InvalidArgument("neither K nor V tensors given")
        if ks is not None and vs is not None and len(ks) != len(vs):
            raise InvalidArgument(f"{len(ks)} K layers but {len(vs)} V layers")
        self.n_layers = len(ks if ks is not None else vs)
        self._keep = keep_k + keep_v
        entries = [e for e in (ks or []) + (vs or []) if e is not None]
        if not entries:
            raise InvalidArgument("every layer's K and V is None")
        first = entries[0]
        self.dtype = first[3].dtype
        self.device = first[3].device
        self.writable = all(e[3].writable for e in entries)
        for e in entries:
            t = e[3]
            if t.dtype != self.dtype or t.device != self.device:
                raise InvalidArgument(f"tensors differ: {first[3].describe()} and {t.describe()}")
            if e[1] != first[1]:
                raise InvalidArgument(f"layer tensors differ in shape: {list(first[1])} and "
                                      f"{list(e[1])}")
            _check_dense(e[1], e[2], "tensor", t)
        if dtype is not None and dtype_code(dtype) != self.dtype:
            raise InvalidArgument(f"dtype {dtype!r} given for {first[3].describe()}")
        self._k = [None if e is None else e[0] for e in ks] if ks else [None] * self.n_layers
        self._v = [None if e is None else e[0] for e in vs] if vs else [None] * self.n_layers
        return first[1]

    @property
    def dtype_name(self):
        return DTYPE_NAMES[self.dtype]

    def _bases(self):
        n = self.n_layers
        return (ctypes.c_void_p * n)(*self._k), (ctypes.c_void_p * n)(*self._v)


class Contiguous(_Layout):
    """KV as [tokens][kv_heads][head_dim] per layer: k and v are each one tensor
    [layers, tokens, kv_heads, head_dim] or a list of per-layer [tokens, kv_heads, head_dim]
    tensors (None skips a layer). NumPy arrays (float16, float32; uint16 with dtype='bf16') or
    torch tensors (CPU, or CUDA for a CUDA context). Either k or v may be None (e.g. keys only
    for rope_shift)."""

    def __init__(self, k, v, dtype=None):
        shape = self._init_layers(k, v, 3, dtype)
        self.capacity_tokens, self.n_kv_heads, self.head_dim = (int(s) for s in shape)

    def _c(self):
        kb, vb = self._bases()
        d = _lib.Dest()
        check(_lib.library().kdn_dest_contiguous(ctypes.byref(d), self.dtype, self.n_layers, kb,
                                                 vb, self.n_kv_heads, self.head_dim,
                                                 self.capacity_tokens), "contiguous destination")
        return d, (kb, vb)


class Paged(_Layout):
    """A vLLM-shaped paged KV cache: per layer one tensor [2, num_blocks, block_size, kv_heads,
    head_dim] (K at [0], V at [1]; layout 'NHD'), or [2, num_blocks, kv_heads, block_size,
    head_dim] (layout 'HND'); kv_caches is a list of them or one tensor with a leading layer
    dimension. Token t of the sequence goes to block block_table[t // block_size], row
    t % block_size (no block table: block t // block_size), or, with slot_mapping, to slot
    slot_mapping[t] (block slot // block_size; entries < 0 skip the token). Every block and slot
    named must be within num_blocks: checked here, since the C descriptor does not know it."""

    def __init__(self, kv_caches, block_table=None, slot_mapping=None, layout="NHD", dtype=None):
        if layout not in ("NHD", "HND"):
            raise InvalidArgument(f"layout {layout!r}: 'NHD' or 'HND'")
        self.hnd = layout == "HND"
        per, keep = _per_layer(kv_caches, "kv_caches", 5, dtype is not None and
                               dtype_code(dtype) == BF16)
        # Split each layer's [2, ...] into its K and V halves.
        k, v = [], []
        for i, e in enumerate(per):
            if e is None:
                k.append(None)
                v.append(None)
                continue
            ptr, shape, strides, t = e
            if shape[0] != 2:
                raise InvalidArgument(f"kv_caches[{i}]: {t.describe()}: first dimension must be 2 "
                                      "(K, V)")
            for half, out in ((0, k), (1, v)):
                out.append(Tensor(t.obj, ptr + half * strides[0] * t.itemsize, shape[1:],
                                  strides[1:], t.dtype, t.device, t.writable))
        inner = self._init_from_halves(k, v, keep, dtype)
        if self.hnd:
            self.num_blocks, self.n_kv_heads, self.block_size, self.head_dim = inner
        else:
            self.num_blocks, self.block_size, self.n_kv_heads, self.head_dim = inner
        self.block_table = None
        self.slot_mapping = None
        blocks_capacity = self.num_blocks * self.block_size
        if block_table is not None and slot_mapping is not None:
            raise InvalidArgument("give block_table or slot_mapping, not both")
        if block_table is not None:
            table = host_ints(block_table, "block_table")
            for i, b in enumerate(table):
                if b >= self.num_blocks:
                    raise InvalidArgument(f"block_table[{i}] = {b} is not below num_blocks "
                                          f"{self.num_blocks}")
            self.block_table = table
            self.capacity_tokens = min(len(table) * self.block_size, _UINT32_MAX)
        elif slot_mapping is not None:
            slots = host_ints(slot_mapping, "slot_mapping")
            for i, s in enumerate(slots):
                if s >= blocks_capacity:
                    raise InvalidArgument(f"slot_mapping[{i}] = {s} is not below num_blocks * "
                                          f"block_size = {blocks_capacity}")
            self.slot_mapping = slots
            self.capacity_tokens = min(len(slots), _UINT32_MAX)
        else:
            self.capacity_tokens = min(blocks_capacity, _UINT32_MAX)

    def _init_from_halves(self, k, v, keep, dtype):
        # The halves are Tensors already; reuse the per-layer checks on them.
        self._keep = keep
        entries = [t for t in k + v if t is not None]
        if not entries:
            raise InvalidArgument("every layer of kv_caches is None")
        first = entries[0]
        self.n_layers = len(k)
        self.dtype, self.device = first.dtype, first.device
        self.writable = all(t.writable for t in entries)
        for t in entries:
            if t.dtype != first.dtype or t.device != first.device or t.shape != first.shape:
                raise InvalidArgument(f"kv_caches differ: {first.describe()} and {t.describe()}")
            _check_dense(t.shape, t.strides, "kv_caches", t)
        if dtype is not None and dtype_code(dtype) != self.dtype:
            raise InvalidArgument(f"dtype {dtype!r} given for {first.describe()}")
        self._k = [None if t is None else t.ptr for t in k]
        self._v = [None if t is None else t.ptr for t in v]
        return tuple(int(s) for s in first.shape)

    def _c(self):
        kb, vb = self._bases()
        table = None
        if self.block_table is not None:
            table = (ctypes.c_int32 * max(1, len(self.block_table)))(*self.block_table)
        d = _lib.Dest()
        check(_lib.library().kdn_dest_paged(
            ctypes.byref(d), self.dtype, self.n_layers, kb, vb, self.n_kv_heads, self.head_dim,
            self.block_size, 1 if self.hnd else 0, table,
            len(self.block_table) if self.block_table is not None else 0), "paged destination")
        keep = (kb, vb, table)
        if self.slot_mapping is not None:
            slots = (ctypes.c_int64 * max(1, len(self.slot_mapping)))(*self.slot_mapping)
            d.slot_mapping = slots
            d.n_slots = len(self.slot_mapping)
            keep += (slots,)
        d.capacity_tokens = self.capacity_tokens
        return d, keep


def _as_layout(dest):
    if isinstance(dest, _Layout):
        return dest
    if isinstance(dest, tuple) and len(dest) == 2:
        return Contiguous(*dest)
    raise InvalidArgument("a kdn.Contiguous, a kdn.Paged or a (k, v) pair is needed, not "
                          f"{type(dest).__name__}")


def _layer_range(layers, n_layers):
    if layers is None:
        return 0, n_layers
    if isinstance(layers, int):
        return layers, layers + 1
    if isinstance(layers, range):
        if layers.step != 1:
            raise InvalidArgument("layers: a range with step 1 is needed")
        return layers.start, layers.stop
    begin, end = layers
    return int(begin), int(end)


# --- caches ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CacheInfo:
    """What a `.kv` file's header says (kdn_info, kdn_cache_prefix_hashes)."""
    path: str
    model: Model
    fingerprint: str            # model fingerprint, 32 hex digits (hi 64 bits first)
    n_tokens: int
    position_offset: int        # position of token 0 when the KV was computed
    tokens: tuple               # the token ids
    codec: str                  # canonical codec name: 'raw', 'lossless', 'q4', 'q4+zstd', ...
    chunk_tokens: int           # prefix hash granularity
    prefix_hashes: tuple        # chained prefix hashes, 32 hex digits each (see prefix_hashes())
    file_bytes: int
    decoded_bytes: int          # all layers, K and V, in the model dtype


class Cache:
    """An open `.kv` file (kdn_cache). Use as a context manager or close(); loads pending when it
    is closed are waited for."""

    def __init__(self, path, ctx=None, device=None):
        if ctx is None:
            ctx = context(-1 if device is None else device)
        self.ctx = ctx
        self.path = os.fspath(path)
        lib = _lib.library()
        handle = ctypes.c_void_p()
        check(lib.kdn_open(ctx.handle, os.fsencode(self.path), ctypes.byref(handle)),
              f"open {self.path}")
        self._handle = handle
        self._pending = []  # tensors of loads not yet waited for, kept alive until then
        try:
            self.info = self._read_info(lib)
        except BaseException:
            self.close()
            raise

    def _read_info(self, lib):
        raw = _lib.CacheInfo()
        check(lib.kdn_info(self._handle, ctypes.byref(raw)), "info")
        tokens = array.array("I")
        if raw.n_tokens:
            tokens.frombytes(ctypes.string_at(raw.tokens, 4 * raw.n_tokens))
        fp = bytes(raw.fingerprint)
        fingerprint = fp[8:16][::-1].hex() + fp[0:8][::-1].hex()
        # A first call with no room says how many hashes there are (and the chunk size).
        n = ctypes.c_uint32()
        chunk = ctypes.c_uint32()
        lib.kdn_cache_prefix_hashes(self._handle, None, 0, ctypes.byref(n), ctypes.byref(chunk))
        hashes = _read_hashes(lambda buf, c, out: lib.kdn_cache_prefix_hashes(
            self._handle, buf, c, out, None), n.value)
        return CacheInfo(path=self.path, model=Model._from_c(raw.model), fingerprint=fingerprint,
                         n_tokens=raw.n_tokens, position_offset=raw.position_offset,
                         tokens=tuple(tokens), codec=raw.codec.decode(),
                         chunk_tokens=chunk.value, prefix_hashes=tuple(hashes),
                         file_bytes=raw.file_bytes, decoded_bytes=raw.decoded_bytes)

    # The header's fields, as attributes of the cache too.
    def __getattr__(self, name):
        info = self.__dict__.get("info")
        if info is not None and name in CacheInfo.__dataclass_fields__:
            return getattr(info, name)
        raise AttributeError(name)

    def __repr__(self):
        i = self.info
        return (f"<kdn.Cache {i.path!r} model={i.model.name} tokens={i.n_tokens} "
                f"codec={i.codec}>")

    @property
    def handle(self):
        if not self._handle:
            raise InvalidArgument("cache is closed")
        return self._handle

    def close(self):
        if self.__dict__.get("_handle"):
            _lib.library().kdn_close(self._handle)  # waits for pending loads
            self._handle = None
            self._pending = []

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def expect_model(self, model):
        """Raises Error KDN_E_MODEL_MISMATCH, naming the first differing field, unless this
        cache was computed by `model`."""
        d = model._c()
        check(_lib.library().kdn_expect_model(self.handle, ctypes.byref(d)), self.path)

    def _check_dest(self, dest, writes=True):
        if dest.device != self.ctx.device:
            where = "host memory" if dest.device < 0 else f"cuda:{dest.device}"
            raise InvalidArgument(f"tensors in {where}, but {self.path} was opened on "
                                  f"{'the CPU' if self.ctx.device < 0 else f'cuda:{self.ctx.device}'}"
                                  f": open it with device={dest.device}")
        if writes and not dest.writable:
            raise InvalidArgument("destination tensors are read-only")

    def load(self, dest, layers=None, token_offset=0, stream=None, wait=True):
        """Decodes layers (None = all; an int; (begin, end); a range) into `dest` (a Contiguous,
        a Paged, or a (k, v) pair of tensors), the cache's token i going to destination token
        token_offset + i, converted to the destination's dtype. Keys stay at the positions they
        were computed at (blend_load re-positions them). wait=True returns once the data is in
        place (for CUDA: enqueued on `stream`, default torch's current stream, and complete);
        wait=False returns at once: wait_layer(l) or sync() then."""
        dest = _as_layout(dest)
        self._check_dest(dest)
        begin, end = _layer_range(layers, self.info.model.n_layers)
        d, keep = dest._c()
        s = _lib.library().kdn_load(self.handle, begin, end, ctypes.byref(d), int(token_offset),
                                    _cuda_stream(dest.device, stream))
        check(s, f"load {self.path}")
        self._pending.append((dest, keep))
        if wait:
            self.sync()
        return dest

    def wait_layer(self, layer):
        check(_lib.library().kdn_layer_wait(self.handle, int(layer)),
              f"{self.path} layer {layer}")

    def layer_event(self, layer):
        """The cudaEvent_t (an int) recorded after layer `layer`'s last write; None for the CPU."""
        return _lib.library().kdn_layer_event(self.handle, int(layer))

    def sync(self):
        """Waits for every pending load; raises the first error among them."""
        try:
            check(_lib.library().kdn_sync(self.handle), f"load {self.path}")
        finally:
            self._pending = []

    def numpy(self, dtype=None, layers=None):
        """(k, v): new NumPy arrays [layers, tokens, kv_heads, head_dim] holding the decoded
        cache, in `dtype` ('fp16' or 'fp32'; default the model's, bf16 as uint16)."""
        import numpy as np
        m = self.info.model
        code = dtype_code(dtype or m.dtype)
        np_dtype = {F16: np.float16, F32: np.float32, BF16: np.uint16}[code]
        begin, end = _layer_range(layers, m.n_layers)
        shape = (end - begin, self.info.n_tokens, m.n_kv_heads, m.head_dim)
        k, v = np.empty(shape, np_dtype), np.empty(shape, np_dtype)
        self._load_dense(k, v, begin, end, DTYPE_NAMES[code])
        return k, v

    def torch(self, dtype=None, layers=None, device=None):
        """(k, v): new torch tensors [layers, tokens, kv_heads, head_dim] holding the decoded
        cache, on the cache's device (cuda:N for a CUDA context) unless `device` says."""
        import torch
        m = self.info.model
        code = dtype_code(dtype or m.dtype)
        t_dtype = {F16: torch.float16, BF16: torch.bfloat16, F32: torch.float32}[code]
        begin, end = _layer_range(layers, m.n_layers)
        if device is None:
            device = "cpu" if self.ctx.device < 0 else f"cuda:{self.ctx.device}"
        shape = (end - begin, self.info.n_tokens, m.n_kv_heads, m.head_dim)
        k = torch.empty(shape, dtype=t_dtype, device=device)
        v = torch.empty(shape, dtype=t_dtype, device=device)
        self._load_dense(k, v, begin, end, None)
        return k, v

    def _load_dense(self, k, v, begin, end, dtype):
        # Layers [begin, end) of the file go to entries 0.. of k and v: the list form addresses
        # them per layer, with None for the layers before `begin`.
        ks = [None] * begin + [k[i] for i in range(end - begin)]
        vs = [None] * begin + [v[i] for i in range(end - begin)]
        self.load(Contiguous(ks, vs, dtype=dtype if dtype == "bf16" else None),
                  layers=(begin, end))


def open(path, device=None, ctx=None):  # noqa: A001 - the package's verb, like io.open
    """Opens a `.kv` file: reads and validates its header (nothing is decoded yet). Returns a
    Cache whose .info (and attributes) give model, tokens, codec, prefix hashes, sizes. device:
    None or -1 = the CPU backend, N = CUDA device N (for loads into CUDA tensors)."""
    return Cache(path, ctx=ctx, device=device)


def _read_hashes(call, cap):
    buf = ctypes.create_string_buffer(_lib.PREFIX_HASH_HEX_BYTES * max(1, cap))
    n = ctypes.c_uint32()
    check(call(buf, cap, ctypes.byref(n)), "prefix hashes")
    raw = buf.raw
    w = _lib.PREFIX_HASH_HEX_BYTES
    return [raw[i * w:i * w + 32].decode() for i in range(n.value)]


def _u32_array(values, what):
    values = host_ints(values, what)
    for v in values:
        if not 0 <= v <= _UINT32_MAX:
            raise InvalidArgument(f"{what}: {v} is not a 32-bit unsigned token id")
    return (ctypes.c_uint32 * max(1, len(values)))(*values), len(values)


# --- save -----------------------------------------------------------------------------------------

def save(path, model, tokens, src, codec="raw", position_offset=0, chunk_tokens=0, fsync=False,
         ctx=None):
    """Encodes KV tensors into a `.kv` file at `path` (atomically). `src` (a Contiguous, a Paged
    or a (k, v) pair) holds token i of the sequence `tokens` at destination token i, in the
    model's dtype, every layer's K and V; computed at positions position_offset + i. codec:
    'raw', 'lossless', 'q8', 'q4', 'q2' with options ('q4+zstd', 'q4:g64'), 'tc', 'tc:q=6'..."""
    src = _as_layout(src)
    if ctx is None:
        ctx = context(src.device)
    if src.device != ctx.device:
        raise InvalidArgument(f"src tensors on device {src.device}, context on {ctx.device}")
    if src.device >= 0 and is_torch(src._keep[0].obj):
        import torch
        # kdn_save reads on the legacy default stream: work on other streams must be done.
        torch.cuda.synchronize(src.device)
    tok, n = _u32_array(tokens, "tokens")
    d, keep = src._c()
    m = model._c()
    opts = _lib.SaveOpts(codec.encode(), int(chunk_tokens), 1 if fsync else 0)
    check(_lib.library().kdn_save(ctx.handle, ctypes.byref(m), tok, n, int(position_offset),
                                  ctypes.byref(d), ctypes.byref(opts), os.fsencode(path)),
          f"save {os.fspath(path)}")
    del keep


# --- prefix lookup --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Prefix:
    """A cached prefix: the file, and how many of the prompt's tokens it holds (use only its
    first n_tokens: the file may hold more)."""
    path: str
    n_tokens: int


def find_prefix(set_dir, model, tokens, chunk_tokens=0):
    """The `.kv` file of the knowledge set `set_dir` holding the longest prefix of the prompt
    `tokens` as computed by `model` (kdn_find_prefix), or None. Only files owned by a user the
    set trusts, computed by that model at position 0, whose own token ids equal the prompt's are
    answered: a forged or colliding prefix hash selects nothing."""
    lib = _lib.library()
    tok, n = _u32_array(tokens, "tokens")
    m = model._c()
    cap = len(os.fsencode(set_dir)) + 4096
    out = ctypes.create_string_buffer(cap)
    n_prefix = ctypes.c_uint32()
    s = lib.kdn_find_prefix(os.fsencode(set_dir), ctypes.byref(m), tok, n, int(chunk_tokens), out,
                            cap, ctypes.byref(n_prefix))
    if s == Status.NOT_FOUND:
        return None
    check(s, f"find_prefix in {os.fspath(set_dir)}")
    return Prefix(os.fsdecode(out.value), n_prefix.value)


def prefix_hashes(model, tokens, chunk_tokens=0):
    """The format's chained prefix hashes of `tokens` under `model` (32 hex digits each): hash i
    covers the first min((i + 1) * chunk_tokens, len(tokens)) tokens (chunk_tokens 0 = 256). On
    kdnfs, <set>/.kdn-prefix/<hash> names the set's file with that prefix; a hash is a hint,
    never a proof: use find_prefix, or compare the file's tokens, before using a file."""
    lib = _lib.library()
    tok, n = _u32_array(tokens, "tokens")
    m = model._c()
    chunk = int(chunk_tokens) or 256
    cap = -(-n // chunk)
    return _read_hashes(lambda buf, c, out: lib.kdn_prefix_hashes(
        ctypes.byref(m), tok, n, int(chunk_tokens), buf, c, out), cap)


# --- blending -------------------------------------------------------------------------------------

def _ctx_for(layout, ctx):
    if ctx is None:
        ctx = context(layout.device)
    if ctx.device != layout.device:
        raise InvalidArgument(f"tensors on device {layout.device}, context on {ctx.device}")
    return ctx


def rope_shift(model, keys, delta, token_begin=0, n_tokens=None, layers=None, ctx=None,
               stream=None):
    """Re-rotates the keys of destination tokens [token_begin, token_begin + n_tokens) (default:
    to the end of `keys`) in place from position p to p + delta, per the model's RoPE
    (kdn_rope_shift). `keys`: a Contiguous or Paged whose K tensors are the keys."""
    keys = _as_layout(keys)
    ctx = _ctx_for(keys, ctx)
    if n_tokens is None:
        n_tokens = keys.capacity_tokens - token_begin
    begin, end = _layer_range(layers, model.n_layers)
    d, keep = keys._c()
    m = model._c()
    check(_lib.library().kdn_rope_shift(ctx.handle, ctypes.byref(m), ctypes.byref(d), begin, end,
                                        int(token_begin), int(n_tokens), int(delta),
                                        _cuda_stream(keys.device, stream)), "rope_shift")
    del keep


def blend_load(caches, dest_token_offsets, dest, position_base=0, model=None, layers=None,
               stream=None, wait=True):
    """Places several caches in one destination (kdn_blend_load): cache i's tokens at destination
    tokens from dest_token_offsets[i], its keys re-rotated to positions position_base +
    offset + j. Every cache must match `model` (default: the first cache's) and share one
    context. wait=False: sync() each cache before using the result."""
    caches = list(caches)
    dest = _as_layout(dest)
    if not caches:
        return dest
    if len(dest_token_offsets) != len(caches):
        raise InvalidArgument(f"{len(caches)} caches but {len(dest_token_offsets)} offsets")
    for c in caches:
        c._check_dest(dest)
    if model is None:
        model = caches[0].info.model
    begin, end = _layer_range(layers, model.n_layers)
    handles = (ctypes.c_void_p * len(caches))(*[c.handle for c in caches])
    offsets, _ = _u32_array(dest_token_offsets, "dest_token_offsets")
    d, keep = dest._c()
    m = model._c()
    check(_lib.library().kdn_blend_load(handles, len(caches), offsets, int(position_base),
                                        ctypes.byref(m), begin, end, ctypes.byref(d),
                                        _cuda_stream(dest.device, stream)), "blend_load")
    for c in caches:
        c._pending.append((dest, keep))
    if wait:
        errors = []
        for c in caches:
            try:
                c.sync()
            except Error as e:
                errors.append(e)
        if errors:
            raise errors[0]
    return dest


def _kv_code(kv):
    if kv in ("k", "K", 0):
        return 0
    if kv in ("v", "V", 1):
        return 1
    raise InvalidArgument(f"kv {kv!r}: 'k' or 'v'")


def _rows(rows, layout, what):
    t = as_tensor(rows, what, layout.dtype == BF16)
    if t.dtype != layout.dtype or t.device != layout.device:
        raise InvalidArgument(f"{what}: {t.describe()}, but the cache tensors are "
                              f"{DTYPE_NAMES[layout.dtype]} on device {layout.device}")
    channels = layout.n_kv_heads * layout.head_dim
    n = int(t.shape[0]) if t.shape else 0
    per_row = 1
    for s in t.shape[1:]:
        per_row *= int(s)
    if per_row != channels:
        raise InvalidArgument(f"{what}: {t.describe()}: rows of kv_heads * head_dim = {channels} "
                              "values expected")
    _check_dense(t.shape, t.strides, what, t)
    return t, n


def select_deviation(fresh, cached, layer, kv="k", token_begin=0, ratio=0.15, ctx=None,
                     stream=None):
    """CacheBlend's token selection (kdn_select_deviation): per-token squared deviation between
    `fresh` (recomputed rows [n_tokens, kv_heads * head_dim] or [n_tokens, kv_heads, head_dim],
    the cache tensors' dtype and device) and the cached rows of destination tokens
    [token_begin, token_begin + n_tokens) of `layer`, K or V, in `cached`. Returns (indices,
    deviations): the ceil(ratio * n_tokens) most deviating tokens (relative to token_begin),
    largest first, and every token's deviation."""
    cached = _as_layout(cached)
    ctx = _ctx_for(cached, ctx)
    t, n = _rows(fresh, cached, "fresh")
    out_idx = (ctypes.c_uint32 * max(1, n))()
    out_dev = (ctypes.c_float * max(1, n))()
    count = ctypes.c_uint32()
    d, keep = cached._c()
    check(_lib.library().kdn_select_deviation(
        ctx.handle, t.ptr, ctypes.byref(d), int(layer), _kv_code(kv), int(token_begin), n,
        float(ratio), out_idx, ctypes.byref(count), out_dev, _cuda_stream(cached.device, stream)),
        "select_deviation")
    del keep
    return list(out_idx[:count.value]), list(out_dev[:n])


def scatter_rows(rows, token_indices, dest, layer, kv="k", ctx=None, stream=None):
    """Writes rows ([n_rows, kv_heads * head_dim] or [n_rows, kv_heads, head_dim]) to destination
    tokens token_indices[i] of `layer`, K or V (kdn_scatter_rows): the recomputed tokens of a
    blend go back into the cache."""
    dest = _as_layout(dest)
    ctx = _ctx_for(dest, ctx)
    t, n = _rows(rows, dest, "rows")
    idx, n_idx = _u32_array(token_indices, "token_indices")
    if n_idx != n:
        raise InvalidArgument(f"{n} rows but {n_idx} token indices")
    d, keep = dest._c()
    check(_lib.library().kdn_scatter_rows(ctx.handle, t.ptr, idx, n, ctypes.byref(d), int(layer),
                                          _kv_code(kv), _cuda_stream(dest.device, stream)),
          "scatter_rows")
    del keep
