"""perf_analyzer's input files and the Debian runtime reader, without a server."""

from __future__ import annotations

import base64
import io
import json
import lzma
import tarfile

import pytest

from tools.perf import debian_runtime
from tools.perf.inputs import InputSpec, build_input_data
from triton_embeds.protocol import EMBEDS_BASE64_INPUT, EMBEDS_FP32_INPUT, SAMPLING_INPUT, STREAM_INPUT


def test_embeds_input_has_shape_and_float_values():
    data = build_input_data(InputSpec(kind="embeds", entries=2, seq_len=3, hidden=4, stream=False))
    entry = data["data"][0]
    assert entry[EMBEDS_FP32_INPUT]["shape"] == [3, 4]
    # perf_analyzer refuses integer literals for FP32, so every value must serialise as a float.
    assert all(isinstance(v, float) for v in entry[EMBEDS_FP32_INPUT]["content"])
    assert entry[STREAM_INPUT] == [False]
    assert json.loads(entry[SAMPLING_INPUT][0]) == {"max_tokens": 16, "ignore_eos": True, "temperature": 0}
    assert data["data"][0][EMBEDS_FP32_INPUT] != data["data"][1][EMBEDS_FP32_INPUT]


def test_base64_input_is_torch_save_of_the_right_shape():
    torch = pytest.importorskip("torch")
    data = build_input_data(InputSpec(kind="base64", entries=1, seq_len=5, hidden=8))
    payload = base64.b64decode(data["data"][0][EMBEDS_BASE64_INPUT][0])
    tensor = torch.load(io.BytesIO(payload), weights_only=True)
    assert tensor.shape == (5, 8) and tensor.dtype == torch.float32


def test_packages_index_and_deb_reading(tmp_path):
    index = debian_runtime.parse_packages_index(
        "Package: libc6\nVersion: 2.41\nFilename: pool/main/g/glibc/libc6.deb\nSHA256: ab\n"
        "Description: x\n more text: with a colon\n\nPackage: zlib1g\nFilename: pool/z.deb\n"
    )
    assert index["libc6"]["Filename"] == "pool/main/g/glibc/libc6.deb" and "zlib1g" in index
    triplet = debian_runtime.host_arch().triplet
    deb = fake_deb({f"./usr/lib/{triplet}/libdemo.so.1": b"ELF", "./usr/share/doc/demo": b"doc"})
    debian_runtime.extract_data_tar(deb, tmp_path)
    assert (tmp_path / "usr" / "lib" / triplet / "libdemo.so.1").read_bytes() == b"ELF"
    assert not (tmp_path / "usr" / "share").exists()  # only the library directory is unpacked


def fake_deb(files: dict[str, bytes]) -> bytes:
    """A minimal .deb: an ar archive holding debian-binary and data.tar.xz."""
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    members = {"debian-binary": b"2.0\n", "data.tar.xz": lzma.compress(tar_bytes.getvalue())}
    blob = b"!<arch>\n"
    for name, content in members.items():
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(content):<10}`\n".encode()
        blob += header + content + (b"\n" if len(content) % 2 else b"")
    return blob
