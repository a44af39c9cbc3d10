"""A safetensors file written one tensor at a time (memory: the tensor being written).

``safetensors.torch.save_file`` needs every tensor in memory at once. The format
(https://github.com/huggingface/safetensors, "Format") is an 8-byte
little-endian header length, a JSON header mapping each name to its dtype,
shape and ``[begin, end)`` byte offsets in the data section, then the raw
little-endian bytes: once the names, shapes and dtypes are known (they follow
from the ModelConfig), the header can be written first and the data streamed.
The result is read back with ``safetensors.safe_open`` in the tests.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .errors import ConvertError

DTYPE_CODES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
               torch.float64: "F64", torch.int64: "I64", torch.int32: "I32"}


class StreamingSafetensorsWriter:
    """Writes ``layout`` = [(name, shape, dtype), ...] in that order, tensor by tensor."""

    def __init__(self, path: str, layout: Sequence[Tuple[str, Sequence[int], torch.dtype]],
                 metadata: Optional[Dict[str, str]] = None):
        header: Dict[str, object] = {"__metadata__": dict(metadata or {"format": "pt"})}
        offset = 0
        self.layout: List[Tuple[str, Tuple[int, ...], torch.dtype]] = []
        for name, shape, dtype in layout:
            shape = tuple(int(s) for s in shape)
            size = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
            header[name] = {"dtype": DTYPE_CODES[dtype], "shape": list(shape),
                            "data_offsets": [offset, offset + size]}
            self.layout.append((name, shape, dtype))
            offset += size
        text = json.dumps(header, separators=(",", ":")).encode("utf-8")
        text += b" " * (-len(text) % 8)     # the data section starts 8-byte aligned
        self.path = path
        self.file = open(path, "wb")
        self.file.write(struct.pack("<Q", len(text)))
        self.file.write(text)
        self.next = 0

    def write(self, name: str, tensor: torch.Tensor) -> None:
        if self.next >= len(self.layout):
            raise ConvertError(f"{self.path}: {name} is beyond the declared tensors")
        want, shape, dtype = self.layout[self.next]
        if name != want or tuple(tensor.shape) != shape or tensor.dtype != dtype:
            raise ConvertError(f"{self.path}: expected {want} {list(shape)} {dtype}, got "
                               f"{name} {list(tensor.shape)} {tensor.dtype}")
        data = tensor.detach().contiguous().cpu().view(torch.uint8).reshape(-1)
        self.file.write(memoryview(data.numpy()))
        self.next += 1

    def close(self) -> None:
        if self.next != len(self.layout):
            missing = [n for n, _, _ in self.layout[self.next:]]
            self.file.close()
            raise ConvertError(f"{self.path}: {len(missing)} tensors were never written "
                               f"(first: {missing[0]})")
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
