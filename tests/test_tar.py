"""gandist's tar reader against Python's tarfile and GNU tar: same members, early ends named, and
hostile shards (fuzzed headers, PAX records, sizes, bombs) end in a named error within bounds."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import random
import shutil
import signal
import subprocess
import tarfile
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from gandist.data.tar import (
    CompressedStreamError,
    MemberTooLargeError,
    ShardError,
    TarHeaderError,
    TruncatedShardError,
    tar_members,
)

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


# ---- hostile shards ---------------------------------------------------------------------------


def header_block(
    name: str, size: int | bytes, kind: bytes = b"0", fix_checksum: bool = True
) -> bytes:
    """One ustar header; `size` an int (written in octal) or the raw 12-byte field."""
    info = tarfile.TarInfo(name)
    info.size, info.type = 0, kind
    block = bytearray(info.tobuf(tarfile.USTAR_FORMAT))
    block[124:136] = size if isinstance(size, bytes) else f"{size:011o}\0".encode()
    if fix_checksum:
        set_checksum(block)
    return bytes(block)


def set_checksum(block: bytearray) -> None:
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}\0 ".encode()


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def pax_shard(records: bytes, member: bytes = b"payload") -> bytes:
    """A PAX header holding `records` (raw), then a member and the end-of-archive marker."""
    return (
        header_block("././@PaxHeader", len(records), b"x")
        + padded(records)
        + header_block("a.png", len(member))
        + padded(member)
        + bytes(1024)
    )


class BoundedReads(io.RawIOBase):
    """A shard stream that fails the test on an unbounded or oversized read."""

    def __init__(self, data: bytes, max_read: int) -> None:
        self.data, self.at, self.max_read = data, 0, max_read

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        assert 0 <= size <= self.max_read, f"read({size}): unbounded or over {self.max_read}"
        chunk = self.data[self.at : self.at + size]
        self.at += len(chunk)
        return chunk


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in this (main) thread when the block runs longer than `seconds`."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"no result within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


COMPRESSORS = (
    lambda data: gzip.compress(data, 1, mtime=0),
    lambda data: bz2.compress(data, 1),
    lambda data: lzma.compress(data, preset=0),
)
CAP = 64 << 10  # the member cap the fuzzed shards are read with


def outcome(data: bytes) -> str:
    """'members' or the name of the ShardError; anything else (another exception, a timeout,
    an unbounded read) fails the test."""
    with deadline(2.0):
        try:
            list(tar_members(BoundedReads(data, max(CAP + 512, 1 << 17)), max_member_bytes=CAP))
        except ShardError as err:
            return type(err).__name__
    return "members"


PAX_RECORDS = [
    b"0 path=x\n",  # length 0: the record never advances
    b"1 path=x\n",
    b"-5 path=x\n",
    b"99999 path=x\n",  # longer than the header
    b"12 path=abc\n",  # one byte short
    b"10 pathabc\n",  # no '='
    b"x0 path=x\n",
    b"11 size=-1\n",  # a negative size
    b"13 size=1e9\n",
    b"20 size=99999999999\n",  # over the cap
    b"12 size= 7 \n",
    b"9 size=\xb2\n",  # a superscript two: str.isdigit says yes, int() says no
    b"16 path=\xff\xfe\xfd\n",  # not UTF-8
    b"                  \n",
]

SIZE_FIELDS = [
    b"-0000000001\0",  # int(..., 8) takes a sign
    b"+0000000001\0",
    b"0o000000017\0",
    b"0000_0001\0\0\0",
    b"\xff" * 12,  # GNU base-256 negative
    b"\x80" + (1 << 40).to_bytes(11, "big"),  # base-256: one TiB
    b"77777777777\0",
    b"9\0\0\0\0\0\0\0\0\0\0\0",
    b"           ",
]


def mutants(seed: int, count: int) -> Iterator[bytes]:
    """Deterministic mutations of small shards: header fields, PAX records, sizes, checksums,
    cut points, and compressed streams of the same, also corrupted."""
    rng = random.Random(seed)
    files = {"a.png": b"x" * 700, "a.cls": b"1", LONG_DIR + "b.png": b"y" * 100, "é.wav": b"z"}
    bases = [write_tar(files, fmt) for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT)]
    bases.append(write_tar({"x/" + n: d for n, d in files.items()}, tarfile.PAX_FORMAT))
    bases.append(write_tar(files, tarfile.PAX_FORMAT, pax_headers={"comment": "g"}))
    for _ in range(count):
        data = bytearray(rng.choice(bases))
        headers = [
            at for at in range(0, len(data) - 511, 512) if data[at + 257 : at + 262] == b"ustar"
        ]
        at = rng.choice(headers)
        how = rng.randrange(8)
        if how == 0:  # random bytes anywhere in a header, checksum kept or fixed
            for _ in range(rng.randint(1, 8)):
                data[at + rng.randrange(512)] = rng.randrange(256)
        elif how == 1:  # a size field
            data[at + 124 : at + 136] = rng.choice(SIZE_FIELDS)
        elif how == 2:  # a type flag
            data[at + 156] = rng.choice(b"0123456789xgLKSAV\0\xff")
        elif how == 3:  # a checksum field
            data[at + 148 : at + 156] = rng.choice(
                [b"\0" * 8, b"-1\0     ", b"7777777\0", rng.randbytes(8)]
            )
            yield bytes(data)
            continue
        elif how == 4:  # a cut
            yield bytes(data[: rng.randrange(len(data) + 1)])
            continue
        elif how == 5:  # a crafted PAX record, with a valid header around it
            yield pax_shard(rng.choice(PAX_RECORDS) + rng.choice([b"", b"5 a=b\n", bytes(8)]))
            continue
        elif how == 6:  # a random PAX header body
            yield pax_shard(rng.randbytes(rng.randint(0, 600)))
            continue
        else:  # a compressed stream of a mutant, then perhaps corrupted or cut
            inner = next(mutants(rng.randrange(1 << 30), 1))
            packed = bytearray(rng.choice(COMPRESSORS)(inner))
            if rng.random() < 0.5:
                packed[rng.randrange(len(packed))] ^= 1 << rng.randrange(8)
            yield bytes(packed[: rng.choice([len(packed), rng.randrange(len(packed) + 1)])])
            continue
        if rng.random() < 0.7:
            set_checksum_at(data, at)
        yield bytes(data)


def set_checksum_at(data: bytearray, at: int) -> None:
    block = bytearray(data[at : at + 512])
    set_checksum(block)
    data[at : at + 512] = block


def test_fuzzed_shards_end_in_members_or_a_named_error_within_bounds() -> None:
    shards = list(mutants(seed=19, count=2000))
    tracemalloc.start()
    try:
        outcomes = Counter(outcome(data) for data in shards)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak} bytes at peak"
    # The fuzzing reaches every outcome (else it tests less than it claims).
    for name in ("members", "TruncatedShardError", "TarHeaderError", "MemberTooLargeError"):
        assert outcomes[name] > 20, outcomes
    assert outcomes["CompressedStreamError"] > 0, outcomes


@pytest.mark.parametrize(
    ("records", "message"),
    [
        (b"0 path=x\n", "bad PAX record at byte 0: length 0"),
        (b"99 path=x\n", "length 99"),
        (b"path=x\n", "no decimal length"),
        (b"11 size=-1\n", "bad PAX size '-1'"),
    ],
    ids=["zero-length", "past-the-end", "no-length", "negative-size"],
)
def test_a_bad_pax_record_is_named(records: bytes, message: str) -> None:
    with deadline(2.0), pytest.raises(TarHeaderError, match=message):
        list(tar_members(BoundedReads(pax_shard(records), 1 << 20)))


def test_a_negative_or_oversized_member_size_is_named() -> None:
    for field in (b"-0000000001\0", b"\xff" * 12):
        shard = header_block("a.png", field) + bytes(4096)
        with pytest.raises(TarHeaderError, match="not a tar header number"):
            list(tar_members(BoundedReads(shard, 1 << 20)))
    shard = header_block("big.png", 5000) + bytes(5120) + bytes(1024)
    with pytest.raises(
        MemberTooLargeError, match="member 'big.png' is 5000 bytes, over the cap of 4096"
    ):
        list(tar_members(BoundedReads(shard, 1 << 20), max_member_bytes=4096))
    assert list(tar_members(io.BytesIO(shard), max_member_bytes=5000)) == [("big.png", bytes(5000))]


def test_a_decompression_bomb_is_stopped_early() -> None:
    member = bytes(40 << 20)  # 40 MiB of zeros: about 40 KB as gzip
    with io.BytesIO() as buffer:
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            info = tarfile.TarInfo("bomb.bin")
            info.size = len(member)
            tar.addfile(info, io.BytesIO(member))
        bomb = buffer.getvalue()
    del member
    assert len(bomb) < 100_000
    tracemalloc.start()
    try:
        # Caught by the member cap...
        with pytest.raises(MemberTooLargeError, match="over the cap of 1048576"):
            list(tar_members(io.BytesIO(bomb), max_member_bytes=1 << 20))
        # ... and by the expansion bound when the cap is generous, before 40 MiB are held.
        with pytest.raises(MemberTooLargeError, match="decompression bomb"):
            list(tar_members(io.BytesIO(bomb)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 << 20, f"{peak} bytes at peak"
    # A compressed shard of ordinary data reads whole.
    data = write_tar(member_files(), tarfile.GNU_FORMAT)
    for compress in (gzip.compress, bz2.compress, lzma.compress):
        assert list(tar_members(io.BytesIO(compress(data)))) == list(member_files().items())


def test_corrupt_or_cut_compressed_streams_are_named() -> None:
    packed = gzip.compress(write_tar(member_files(), tarfile.GNU_FORMAT))
    with pytest.raises(TruncatedShardError, match="gzip stream is cut off"):
        list(tar_members(io.BytesIO(packed[: len(packed) // 2])))
    broken = bytearray(packed)
    broken[len(broken) // 2] ^= 0xFF
    with pytest.raises(CompressedStreamError, match="corrupt gzip stream"):
        list(tar_members(io.BytesIO(bytes(broken))))


def test_an_endless_stream_after_the_end_marker_is_named() -> None:
    shard = write_tar({"a.png": b"x"}, tarfile.GNU_FORMAT) + b"\1" * (2 << 20)
    with pytest.raises(MemberTooLargeError, match="after the tar end-of-archive marker"):
        list(tar_members(io.BytesIO(shard)))
