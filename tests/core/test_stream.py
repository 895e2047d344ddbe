"""Chunked streaming encryption: round trips, detection of every kind of stream manipulation, files, memory."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from saas.core import keys
from saas.core.errors import DecryptionError

CHUNK = 1024


def encrypt_pieces(plaintext: bytes, key: bytes, chunk_size: int = CHUNK) -> list[bytes]:
    """The header followed by the sealed chunks, as `iter_encrypt` yields them."""
    return list(keys.iter_encrypt(io.BytesIO(plaintext), key, chunk_size=chunk_size))


def decrypt_all(data: bytes, key: bytes) -> bytes:
    return b"".join(keys.iter_decrypt(io.BytesIO(data), key))


def flip_bit(data: bytes, bit: int) -> bytes:
    index, shift = divmod(bit, 8)
    return data[:index] + bytes([data[index] ^ (1 << shift)]) + data[index + 1 :]


def folder_listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.fixture(scope="module")
def key() -> bytes:
    return keys.random_key()


@pytest.fixture(scope="module")
def plaintext() -> bytes:
    """4.5 chunks: four full chunks and a short last one."""
    return os.urandom(4 * CHUNK + CHUNK // 2)


@pytest.fixture(scope="module")
def pieces(plaintext: bytes, key: bytes) -> list[bytes]:
    return encrypt_pieces(plaintext, key)


# -- round trips -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK, 5 * CHUNK + 7, 3 * 1024 * 1024 + 5]
)
def test_stream_round_trip(key: bytes, size: int) -> None:
    plaintext = os.urandom(size)
    pieces = encrypt_pieces(plaintext, key)
    # header, then one sealed chunk per started chunk (one, empty, for empty input)
    assert len(pieces) == 1 + max(1, -(-size // CHUNK))
    assert all(len(piece) == CHUNK + keys.TAG_SIZE for piece in pieces[1:-1])
    assert decrypt_all(b"".join(pieces), key) == plaintext


def test_stream_round_trip_default_chunk_size(key: bytes) -> None:
    plaintext = os.urandom(2 * keys.STREAM_CHUNK_SIZE + 3)
    encrypted = b"".join(keys.iter_encrypt(io.BytesIO(plaintext), key))
    assert decrypt_all(encrypted, key) == plaintext


def test_stream_is_randomised(plaintext: bytes, key: bytes) -> None:
    assert encrypt_pieces(plaintext, key) != encrypt_pieces(plaintext, key)


def test_decrypt_yields_chunks_in_order(plaintext: bytes, key: bytes, pieces: list[bytes]) -> None:
    chunks = list(keys.iter_decrypt(io.BytesIO(b"".join(pieces)), key))
    assert [len(c) for c in chunks] == [CHUNK] * 4 + [CHUNK // 2]
    assert b"".join(chunks) == plaintext


class ShortReads(io.RawIOBase):
    """A raw stream that returns at most 100 bytes per read, like a pipe or socket."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self._data.read(min(len(buffer), 100))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_stream_survives_short_reads(plaintext: bytes, key: bytes) -> None:
    encrypted = b"".join(keys.iter_encrypt(ShortReads(plaintext), key, chunk_size=CHUNK))  # type: ignore[arg-type]
    assert b"".join(keys.iter_decrypt(ShortReads(encrypted), key)) == plaintext  # type: ignore[arg-type]


# -- manipulation is detected ----------------------------------------------------------------------


def assert_rejected(data: bytes, key: bytes) -> None:
    with pytest.raises(DecryptionError):
        decrypt_all(data, key)


def test_truncation_at_every_chunk_boundary_is_detected(pieces: list[bytes], key: bytes) -> None:
    for kept in range(len(pieces)):  # header only, header + 1 chunk, ..., all but the last chunk
        assert_rejected(b"".join(pieces[:kept]), key)


def test_dropping_the_last_chunk_of_full_chunks_is_detected(key: bytes) -> None:
    # every chunk is full size, so the remaining stream looks complete unless 'final' is authenticated
    pieces = encrypt_pieces(os.urandom(3 * CHUNK), key)
    assert len(pieces) == 4
    assert_rejected(b"".join(pieces[:-1]), key)


def test_truncation_mid_chunk_is_detected(pieces: list[bytes], key: bytes) -> None:
    data = b"".join(pieces)
    header = len(pieces[0])
    block = CHUNK + keys.TAG_SIZE
    for cut in (1, header - 1, header + 1, header + block // 2, header + block + 1, len(data) - 1, len(data) - 17):
        assert_rejected(data[:cut], key)


def test_dropping_a_middle_chunk_is_detected(pieces: list[bytes], key: bytes) -> None:
    assert_rejected(b"".join(pieces[:2] + pieces[3:]), key)


def test_reordering_chunks_is_detected(pieces: list[bytes], key: bytes) -> None:
    swapped = [pieces[0], pieces[2], pieces[1], *pieces[3:]]
    assert_rejected(b"".join(swapped), key)


def test_duplicating_a_chunk_is_detected(pieces: list[bytes], key: bytes) -> None:
    assert_rejected(b"".join([*pieces[:2], pieces[1], *pieces[2:]]), key)


@pytest.mark.parametrize("extra", ["copy-of-last", "copy-of-first", "random-block", "one-byte"])
def test_appending_is_detected(pieces: list[bytes], key: bytes, extra: str) -> None:
    appended = {
        "copy-of-last": pieces[-1],
        "copy-of-first": pieces[1],
        "random-block": os.urandom(CHUNK + keys.TAG_SIZE),
        "one-byte": b"\x00",
    }[extra]
    assert_rejected(b"".join(pieces) + appended, key)


def test_appending_after_a_full_last_chunk_is_detected(key: bytes) -> None:
    pieces = encrypt_pieces(os.urandom(2 * CHUNK), key)
    assert_rejected(b"".join([*pieces, pieces[1]]), key)


def test_splicing_chunks_from_another_stream_with_the_same_key_is_detected(plaintext: bytes, key: bytes) -> None:
    first, second = encrypt_pieces(plaintext, key), encrypt_pieces(plaintext, key)
    assert_rejected(b"".join([first[0], first[1], second[2], *first[3:]]), key)
    assert_rejected(b"".join([second[0], *first[1:]]), key)  # another stream's header


def test_every_single_bit_flip_is_detected(key: bytes) -> None:
    # small chunks keep the exhaustive sweep cheap: header, three chunk bodies and tags
    data = b"".join(encrypt_pieces(os.urandom(64 * 2 + 10), key, chunk_size=64))
    for bit in range(len(data) * 8):
        assert_rejected(flip_bit(data, bit), key)


def test_bit_flips_in_larger_chunks_are_detected(pieces: list[bytes], key: bytes) -> None:
    data = b"".join(pieces)
    header = len(pieces[0])
    block = CHUNK + keys.TAG_SIZE
    positions = {0, 7, 8, 11, 12, header - 1}  # magic, chunk size, nonce prefix
    for start in range(header, len(data), block):
        end = min(start + block, len(data))
        positions |= {start, start + 100, end - keys.TAG_SIZE - 1, end - keys.TAG_SIZE, end - 1}  # body, tag
    for position in sorted(positions):
        assert_rejected(flip_bit(data, position * 8), key)


def test_wrong_key_is_detected(pieces: list[bytes]) -> None:
    assert_rejected(b"".join(pieces), keys.random_key())


@pytest.mark.parametrize("data", [b"", b"SAASENC1", b"NOTSAAS!" + bytes(100), bytes(1000)])
def test_non_streams_are_rejected(key: bytes, data: bytes) -> None:
    assert_rejected(data, key)


def test_error_names_the_failing_chunk(pieces: list[bytes], key: bytes) -> None:
    # pieces[0] is the header, pieces[1 + i] is chunk i: chunk 0 is intact, chunk 1 is chunk 2's ciphertext
    swapped = [pieces[0], pieces[1], pieces[3], pieces[2], *pieces[4:]]
    with pytest.raises(DecryptionError) as info:
        decrypt_all(b"".join(swapped), key)
    assert info.value.details == {"chunk": 1}


# -- files -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 10, keys.STREAM_CHUNK_SIZE, 3 * keys.STREAM_CHUNK_SIZE + 12345])
def test_file_round_trip(tmp_path: Path, key: bytes, size: int) -> None:
    source, encrypted, decrypted = tmp_path / "plain.bin", tmp_path / "plain.bin.enc", tmp_path / "plain.out"
    source.write_bytes(os.urandom(size))
    keys.encrypt_file(source, encrypted, key)
    assert encrypted.stat().st_size > size
    keys.decrypt_file(str(encrypted), str(decrypted), key)  # str paths work too
    assert decrypted.read_bytes() == source.read_bytes()
    assert folder_listing(tmp_path) == {"plain.bin", "plain.bin.enc", "plain.out"}


def test_file_and_stream_formats_are_the_same(tmp_path: Path, key: bytes) -> None:
    plaintext = os.urandom(5 * CHUNK + 3)
    encrypted = tmp_path / "small-chunks.enc"
    encrypted.write_bytes(b"".join(encrypt_pieces(plaintext, key)))
    keys.decrypt_file(encrypted, tmp_path / "out", key)
    assert (tmp_path / "out").read_bytes() == plaintext

    keys.encrypt_file(tmp_path / "out", tmp_path / "again.enc", key)
    with open(tmp_path / "again.enc", "rb") as src:
        assert b"".join(keys.iter_decrypt(src, key)) == plaintext


def tamper_drop_last_chunk(pieces: list[bytes]) -> bytes:
    return b"".join(pieces[:-1])


def tamper_flip_first_chunk(pieces: list[bytes]) -> bytes:
    return b"".join([pieces[0], flip_bit(pieces[1], 5), *pieces[2:]])


def tamper_truncate_mid_chunk(pieces: list[bytes]) -> bytes:
    return b"".join(pieces)[:-100]


def tamper_reorder(pieces: list[bytes]) -> bytes:
    return b"".join([pieces[0], pieces[2], pieces[1], *pieces[3:]])


@pytest.mark.parametrize(
    "tamper", [tamper_drop_last_chunk, tamper_flip_first_chunk, tamper_truncate_mid_chunk, tamper_reorder, None]
)
def test_failed_decrypt_file_leaves_no_destination_and_no_temp_file(
    tmp_path: Path, key: bytes, plaintext: bytes, tamper
) -> None:
    pieces = encrypt_pieces(plaintext, key)
    source = tmp_path / "data.enc"
    if tamper is None:  # intact, but the wrong key
        source.write_bytes(b"".join(pieces))
        decrypt_key = keys.random_key()
    else:
        source.write_bytes(tamper(pieces))
        decrypt_key = key
    with pytest.raises(DecryptionError):
        keys.decrypt_file(source, tmp_path / "data", decrypt_key)
    assert folder_listing(tmp_path) == {"data.enc"}


def test_failed_decrypt_file_keeps_an_existing_destination(tmp_path: Path, key: bytes, plaintext: bytes) -> None:
    source, destination = tmp_path / "data.enc", tmp_path / "data"
    source.write_bytes(tamper_drop_last_chunk(encrypt_pieces(plaintext, key)))
    destination.write_bytes(b"previous content")
    with pytest.raises(DecryptionError):
        keys.decrypt_file(source, destination, key)
    assert destination.read_bytes() == b"previous content"
    assert folder_listing(tmp_path) == {"data.enc", "data"}


def test_failed_decrypt_file_of_a_large_truncated_file_leaves_nothing(tmp_path: Path, key: bytes) -> None:
    # several default-size chunks are written to the temp file before the truncation shows at the end
    source, encrypted = tmp_path / "big", tmp_path / "big.enc"
    source.write_bytes(os.urandom(3 * keys.STREAM_CHUNK_SIZE))
    keys.encrypt_file(source, encrypted, key)
    with open(encrypted, "r+b") as f:
        f.truncate(encrypted.stat().st_size - (keys.STREAM_CHUNK_SIZE + keys.TAG_SIZE))
    with pytest.raises(DecryptionError):
        keys.decrypt_file(encrypted, tmp_path / "big.out", key)
    assert folder_listing(tmp_path) == {"big", "big.enc"}


MEMORY_SCRIPT = """
import json, os, resource, sys
from pathlib import Path
from saas.core.keys import decrypt_file, encrypt_file, random_key

folder, size = Path(sys.argv[1]), int(sys.argv[2])
key = random_key()
# warm up: every code path and buffer is in place before the baseline is taken
(folder / "small").write_bytes(os.urandom(3 * 1024 * 1024))
encrypt_file(folder / "small", folder / "small.enc", key)
decrypt_file(folder / "small.enc", folder / "small.out", key)

with open(folder / "big", "wb") as f:
    f.truncate(size)  # sparse: costs no disk, reads as zeros
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
baseline = peak()
encrypt_file(folder / "big", folder / "big.enc", key)
after_encrypt = peak()
(folder / "big").unlink()
decrypt_file(folder / "big.enc", folder / "big.out", key)
after_decrypt = peak()
result = {
    "baseline": baseline,
    "after_encrypt": after_encrypt,
    "after_decrypt": after_decrypt,
    "encrypted_size": (folder / "big.enc").stat().st_size,
    "decrypted_size": (folder / "big.out").stat().st_size,
}
for name in ("big.enc", "big.out"):
    (folder / name).unlink()
print(json.dumps(result))
"""


@pytest.mark.slow
def test_file_encryption_memory_is_bounded(tmp_path: Path, run_python) -> None:
    size = 200 * 1024 * 1024
    result = json.loads(run_python(MEMORY_SCRIPT, str(tmp_path), str(size)).stdout)
    assert result["decrypted_size"] == size
    assert result["encrypted_size"] > size
    limit = 50 * 1024 * 1024
    assert result["after_encrypt"] - result["baseline"] < limit, result
    assert result["after_decrypt"] - result["baseline"] < limit, result
