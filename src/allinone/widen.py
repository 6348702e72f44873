"""Widened weights: a copy of a GGUF whose Q5_0 tensors are stored as Q8_0, holding exactly the same values.

A Q5_0 block is 32 weights `d * (q - 16)` with q in 0..31, packed in 4 + 1 bits; a Q8_0 block is `d * q` with q a
whole byte. Widening keeps d and writes q - 16, so no weight changes. llama.cpp's CPU kernels multiply Q8_0 without
unpacking bits, which speeds up prompts (a classification is one); a decode step, which reads every weight once,
reads more bytes. The default model's 896-wide tensors are Q5_0 (K-quants need multiples of 256), and on 2 threads
its sentiment requests took 0.91 of the time and its decode 2-3% longer (benchmarks/widen.py); under four streams,
three sentiment requests took 0.84 s where the file as it is took 1.18-1.21 s in earlier versions and 1.01 s in
this one (benchmarks/concurrency.py, results/concurrency_widen_off.json). On by default; `ALLINONE_WIDEN=off` loads
the file as it is.
"""

from __future__ import annotations

import glob
import logging
import math
import mmap
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

Q5_0, Q8_0 = 6, 8  # ggml type ids
_Q5_0 = np.dtype([("d", "<u2"), ("qh", "<u4"), ("qs", "u1", (16,))])  # 22 bytes, 32 weights
_Q8_0 = np.dtype([("d", "<u2"), ("qs", "i1", (32,))])  # 34 bytes, 32 weights
_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUF value type -> bytes
_STRING, _ARRAY = 8, 9
_BLOCKS = 1 << 16  # Q5_0 blocks converted at a time
_KEEP = b"token_embd.weight"  # only its rows are looked up, unless the model has no output matrix of its own


@dataclass
class Tensor:
    name: bytes
    dims: tuple[int, ...]
    type: int
    offset: int  # in the data section
    size: int = 0  # bytes in the source, up to the next tensor


@dataclass
class Layout:
    kv_end: int  # header and metadata end here (copied as they are)
    tensors: list[Tensor]  # in the order of the header
    stored: list[Tensor]  # the same, in the order of their data in the file
    alignment: int
    data: int  # where the data section starts
    splits: int = 1  # files the model is split into (llama.cpp finds the others by this file's name)


class _Reader:
    def __init__(self, buf: mmap.mmap) -> None:
        self.buf, self.pos = buf, 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def string(self) -> bytes:
        n = self.take("<Q")
        self.pos += n
        return bytes(self.buf[self.pos - n : self.pos])

    def skip(self, vtype: int) -> None:
        if vtype == _STRING:
            n = self.take("<Q")  # not `self.pos += self.take(...)`: that adds to pos as it was before the read
            self.pos += n
        elif vtype == _ARRAY:
            etype, n = self.take("<I"), self.take("<Q")
            if etype in _SCALAR:
                self.pos += n * _SCALAR[etype]
            else:
                for _ in range(n):
                    self.skip(etype)
        else:
            self.pos += _SCALAR[vtype]


def read_layout(buf: mmap.mmap) -> Layout:
    """Where a GGUF file's metadata ends and each tensor's data lies."""
    r = _Reader(buf)
    if bytes(buf[:4]) != b"GGUF":
        raise ValueError("not a GGUF file")
    r.pos = 4
    if r.take("<I") < 2:
        raise ValueError("GGUF version 1 is not supported")
    n_tensors, n_kv = r.take("<Q"), r.take("<Q")
    alignment, splits = 32, 1
    for _ in range(n_kv):
        key, vtype = r.string(), r.take("<I")
        if key == b"general.alignment" and vtype == 4:
            alignment = r.take("<I")
        elif key == b"split.count" and vtype == 2:
            splits = r.take("<H")
        else:
            r.skip(vtype)
    kv_end = r.pos
    tensors = []
    for _ in range(n_tensors):
        name = r.string()
        dims = tuple(r.take("<Q") for _ in range(r.take("<I")))
        tensors.append(Tensor(name, dims, r.take("<I"), r.take("<Q")))
    data = _align(r.pos, alignment)
    stored = sorted(tensors, key=lambda t: t.offset)
    for t, after in zip(stored, [*stored[1:], None], strict=True):
        t.size = (after.offset if after is not None else len(buf) - data) - t.offset
    return Layout(kv_end, tensors, stored, alignment, data, splits)


def widen_q5_0(raw: memoryview | bytes) -> bytes:
    """Q5_0 blocks as Q8_0 blocks of the same values."""
    blocks = np.frombuffer(raw, dtype=_Q5_0)
    out = np.empty(len(blocks), dtype=_Q8_0)
    shifts = np.arange(32, dtype=np.uint32)
    for i in range(0, len(blocks), _BLOCKS):
        b = blocks[i : i + _BLOCKS]
        low = np.concatenate([b["qs"] & 0x0F, b["qs"] >> 4], axis=1)  # weights 0..15, then 16..31
        high = ((b["qh"][:, None] >> shifts) & 1).astype(np.uint8) << 4  # bit j of qh: weight j's fifth bit
        out["d"][i : i + _BLOCKS] = b["d"]
        out["qs"][i : i + _BLOCKS] = (low | high).astype(np.int16) - 16
    return out.tobytes()


def _blocks(t: Tensor) -> int:
    """Blocks of 32 weights in a tensor."""
    return math.prod(t.dims) // 32


def _align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def _to_widen(tensors: list[Tensor]) -> set[bytes]:
    """The names of the Q5_0 tensors to widen: all, except the token embedding when the model has an output matrix."""
    names = {t.name for t in tensors}
    return {t.name for t in tensors if t.type == Q5_0 and (t.name != _KEEP or b"output.weight" not in names)}


def write_widened(src: Path, dst: Path) -> int:
    """Write src with its Q5_0 tensors as Q8_0 to dst; how many tensors were widened (0: nothing written)."""
    with src.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        try:
            layout = read_layout(buf)
        except (struct.error, KeyError, IndexError, OverflowError) as e:
            raise ValueError(f"not a GGUF file this reader understands ({e})") from None
        wide = _to_widen(layout.tensors)
        for t in layout.tensors:
            fits = t.size >= 0 and layout.data + t.offset + t.size <= len(buf)
            if not fits or (t.name in wide and (t.dims[0] % 32 or _blocks(t) * _Q5_0.itemsize > t.size)):
                raise ValueError(f"tensor {t.name!r} does not fit the file")
        if not wide or layout.splits > 1:  # a copy of one part of a split model would not find the others
            return 0
        offsets, end = {}, 0
        for t in layout.stored:
            offsets[t.name] = end
            end = _align(end + (_blocks(t) * _Q8_0.itemsize if t.name in wide else t.size), layout.alignment)
        with dst.open("wb") as out:
            out.write(buf[: layout.kv_end])
            for t in layout.tensors:
                out.write(struct.pack("<Q", len(t.name)) + t.name + struct.pack("<I", len(t.dims)))
                out.write(struct.pack(f"<{len(t.dims)}Q", *t.dims))
                out.write(struct.pack("<IQ", Q8_0 if t.name in wide else t.type, offsets[t.name]))
            data = _align(out.tell(), layout.alignment)
            for t in layout.stored:
                out.write(b"\0" * (data + offsets[t.name] - out.tell()))
                raw = memoryview(buf)[layout.data + t.offset : layout.data + t.offset + t.size]
                out.write(widen_q5_0(raw[: _blocks(t) * _Q5_0.itemsize]) if t.name in wide else raw)
                raw.release()
        return len(wide)


def widened(src: Path, cache_dir: Path) -> Path:
    """The model to load: a widened copy of src in cache_dir (made once, again when src changes), or src itself when
    it has no Q5_0 tensors, cannot be read as GGUF (llama.cpp will say why), or the copy cannot be written (a warning
    says why)."""
    try:
        stat = src.stat()
    except OSError:  # llama.cpp says what is wrong when it loads the file
        return src
    stem = src.name.removesuffix(".gguf")
    target = cache_dir / f"{stem}.{stat.st_size}-{stat.st_mtime_ns}.q8.gguf"
    plain = cache_dir / f"{stem}.{stat.st_size}-{stat.st_mtime_ns}.plain"  # src has nothing to widen
    if target.is_file():
        return target
    if plain.is_file():
        return src
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".widening-", suffix=".gguf", dir=cache_dir)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            if write_widened(src, tmp) == 0:
                plain.touch()
                return src
            for old in cache_dir.glob(f"{glob.escape(stem)}.*"):  # copies of an earlier version of src
                if old != target:  # another process may have just made it, and be loading it
                    old.unlink(missing_ok=True)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    except ValueError as e:  # a file this reader cannot read: llama.cpp says what is wrong with it when it loads it
        log.debug("loading %s as it is: %s", src, e)
        return src
    except OSError as e:
        log.warning("loading %s as it is: could not widen its Q5_0 weights in %s (%s)", src, cache_dir, e)
        return src
    return target
