"""gandist's tar reader against Python's tarfile and GNU tar: same members, and early ends named."""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from gandist.data.tar import TarHeaderError, TruncatedShardError, tar_members

SIZES = (0, 1, 511, 512, 513, 2000)
LONG_DIR = "a-folder-with-a-long-name/" * 5  # 130 characters: too long for a plain ustar name


def member_files(prefix: str = "") -> dict[str, bytes]:
    """Regular files of awkward sizes and names: short, long (> 100), non-ASCII, a meta file."""
    files = {f"{prefix}{i:04d}.bin": bytes([i % 251]) * size for i, size in enumerate(SIZES)}
    files[f"{prefix}{LONG_DIR}0042.png"] = b"long name"
    files[f"{prefix}héllo-wörld.cls"] = b"7"
    files[f"{prefix}__meta__.json"] = b"{}"
    return files


def write_tar(files: dict[str, bytes], fmt: int, **options: object) -> bytes:
    """A tar holding `files` plus a directory, a symlink and a hard link, written by tarfile."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt, **options) as tar:
        folder = tarfile.TarInfo("folder")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1_700_000_000.5  # a float mtime: PAX adds a header
            tar.addfile(info, io.BytesIO(data))
        for kind, name in ((tarfile.SYMTYPE, "link"), (tarfile.LNKTYPE, "hard")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, next(iter(files))
            tar.addfile(info)
    return buffer.getvalue()


def tarfile_members(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isreg()]


@pytest.mark.parametrize(
    "fmt",
    [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT],
    ids=["ustar", "gnu", "pax"],
)
def test_the_members_are_those_tarfile_reads(fmt: int) -> None:
    files = member_files()
    if fmt == tarfile.USTAR_FORMAT:  # ustar has no room for non-ASCII or 130-character names
        files = {n: d for n, d in files.items() if n.isascii() and len(n) <= 100}
    data = write_tar(files, fmt)
    got = list(tar_members(io.BytesIO(data)))
    assert got == tarfile_members(data)
    assert got == list(files.items())


def test_pax_global_headers_and_compressed_streams() -> None:
    data = write_tar(member_files("x/"), tarfile.PAX_FORMAT, pax_headers={"comment": "global"})
    assert data[156:157] == b"g"  # the archive starts with a global PAX header
    assert list(tar_members(io.BytesIO(data))) == list(member_files("x/").items())
    # gzip (and bzip2, xz) streams are read through tarfile, as WebDataset reads them.
    assert list(tar_members(io.BytesIO(gzip.compress(data)))) == list(member_files("x/").items())


@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_the_members_of_an_archive_written_by_gnu_tar(tmp_path: Path, fmt: str) -> None:
    if shutil.which("tar") is None:
        pytest.skip("no tar command here")
    root = tmp_path / "root"
    for name, data in member_files().items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    archive = tmp_path / "made.tar"
    names = sorted(member_files())
    subprocess.run(["tar", f"--format={fmt}", "-cf", archive, "-C", root, *names], check=True)
    data = archive.read_bytes()
    assert list(tar_members(io.BytesIO(data))) == tarfile_members(data)
    assert sorted(tar_members(io.BytesIO(data))) == sorted(member_files().items())


def test_a_stream_that_ends_early_is_named_truncated() -> None:
    data = write_tar({"a.png": b"x" * 700, "a.cls": b"1", "b.png": b"y" * 100}, tarfile.GNU_FORMAT)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        b_header, b_data = tar.getmember("b.png").offset, tar.getmember("b.png").offset_data
        end = tar.offset  # after the last member (a link): the end-of-archive marker
    cuts = {
        b_header: "ends without a tar end-of-archive marker",  # tarfile reads a valid archive
        b_header + 100: "ends inside a tar header",
        b_data + 50: "member 'b.png' has 50 of its 100 bytes",
        end: "ends without a tar end-of-archive marker",
        end + 512: "ends inside the end-of-archive marker",
    }
    for cut, message in cuts.items():
        read = []
        with pytest.raises(TruncatedShardError, match=message):
            for name, _ in tar_members(io.BytesIO(data[:cut])):
                read.append(name)
        assert read == (["a.png", "a.cls"] if cut < end else ["a.png", "a.cls", "b.png"])
    assert [name for name, _ in tar_members(io.BytesIO(data[: end + 1024]))][-1] == "b.png"


def test_a_broken_header_is_named() -> None:
    data = bytearray(write_tar({"a.png": b"x", "b.png": b"y"}, tarfile.GNU_FORMAT))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        data[tar.getmember("b.png").offset + 1] ^= 0x20  # one bit of b.png's name
    with pytest.raises(TarHeaderError, match="bad tar header checksum at member 'b"):
        list(tar_members(io.BytesIO(bytes(data))))
    with pytest.raises(TarHeaderError, match="not a tar archive"):
        list(tar_members(io.BytesIO(b"this is not a tar file" * 100)))
