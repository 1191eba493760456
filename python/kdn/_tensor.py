"""NumPy arrays and PyTorch tensors seen the same way: address, shape, strides in elements,
kdn dtype, device. Neither library is imported unless the caller hands in one of its objects
(so the package works with either, both or, for info and lookup, neither)."""
from .errors import InvalidArgument

F16, BF16, F32 = 1, 2, 3
DTYPE_NAMES = {F16: "fp16", BF16: "bf16", F32: "fp32"}
DTYPE_BYTES = {F16: 2, BF16: 2, F32: 4}
_DTYPE_ALIASES = {"fp16": F16, "f16": F16, "float16": F16, "half": F16,
                  "bf16": BF16, "bfloat16": BF16,
                  "fp32": F32, "f32": F32, "float32": F32, "float": F32}


def dtype_code(dtype):
    """A kdn dtype from 'fp16'/'bf16'/'fp32' (and aliases), a NumPy dtype or a torch dtype."""
    if isinstance(dtype, int) and dtype in DTYPE_NAMES:
        return dtype
    name = str(dtype).lower().replace("torch.", "")
    if name in _DTYPE_ALIASES:
        return _DTYPE_ALIASES[name]
    raise InvalidArgument(f"dtype {dtype!r} is not one kdn writes (fp16, bf16, fp32)")


class Tensor:
    """One array's memory: ptr (int), shape, strides (elements), dtype (kdn code), device (-1 for
    host memory, else the CUDA device index), and the object itself, kept alive."""

    __slots__ = ("obj", "ptr", "shape", "strides", "dtype", "device", "writable")

    def __init__(self, obj, ptr, shape, strides, dtype, device, writable):
        self.obj, self.ptr, self.shape, self.strides = obj, ptr, tuple(shape), tuple(strides)
        self.dtype, self.device, self.writable = dtype, device, writable

    @property
    def itemsize(self):
        return DTYPE_BYTES[self.dtype]

    def sub(self, index):
        """The address of element `index` along the first dimension."""
        return self.ptr + index * self.strides[0] * self.itemsize

    def describe(self):
        where = "host" if self.device < 0 else f"cuda:{self.device}"
        return (f"{DTYPE_NAMES[self.dtype]} {list(self.shape)} strides {list(self.strides)} "
                f"on {where}")


def is_torch(x):
    return type(x).__module__.split(".")[0] == "torch"


def is_numpy(x):
    return type(x).__module__.split(".")[0] == "numpy"


def as_tensor(x, what, bf16=False):
    """A Tensor for a NumPy array or a torch tensor. `bf16`: a NumPy uint16 array holds bf16
    (NumPy has no bfloat16)."""
    if is_torch(x):
        import torch
        if x.dtype == torch.float16:
            code = F16
        elif x.dtype == torch.bfloat16:
            code = BF16
        elif x.dtype == torch.float32:
            code = F32
        else:
            raise InvalidArgument(f"{what}: torch dtype {x.dtype} (kdn writes fp16, bf16, fp32)")
        device = x.device.index if x.device.type == "cuda" else -1
        if x.device.type not in ("cpu", "cuda"):
            raise InvalidArgument(f"{what}: tensor on {x.device} (kdn reads and writes host "
                                  "memory and CUDA devices)")
        if device is None:
            device = torch.cuda.current_device()
        return Tensor(x, x.data_ptr(), x.shape, x.stride(), code, device, True)
    if is_numpy(x):
        import numpy as np
        if x.dtype == np.float16:
            code = F16
        elif x.dtype == np.float32:
            code = F32
        elif x.dtype == np.uint16 and bf16:
            code = BF16
        else:
            hint = " (pass dtype='bf16' for bf16 held in uint16)" if x.dtype == np.uint16 else ""
            raise InvalidArgument(f"{what}: NumPy dtype {x.dtype} (kdn writes float16, float32)"
                                  + hint)
        if any(s % x.itemsize for s in x.strides):
            raise InvalidArgument(f"{what}: strides {x.strides} are not whole elements")
        strides = [s // x.itemsize for s in x.strides]
        return Tensor(x, x.ctypes.data, x.shape, strides, code, -1, bool(x.flags.writeable))
    raise InvalidArgument(f"{what}: a NumPy array or a torch tensor is needed, "
                          f"not {type(x).__name__}")


def host_ints(x, what):
    """A list of Python ints from a sequence, a NumPy array or a (CPU or CUDA) torch tensor."""
    if is_torch(x):
        x = x.detach().cpu().reshape(-1).tolist()
    elif is_numpy(x):
        x = x.reshape(-1).tolist()
    try:
        return [int(v) for v in x]
    except TypeError:
        raise InvalidArgument(f"{what}: a sequence of integers is needed, not "
                              f"{type(x).__name__}") from None
