"""Corpus downloads with no network: a loopback HTTP server (http.server on 127.0.0.1) serves small
tarballs built here in the publishers' layouts. Covered: a clean download (AN4's SPHERE tarball gives
the same data dirs as a FLAC copy of the same utterances), an interrupted download resumed (with and
without HTTP Range support), a corrupted one refused by its checksum, the one-line offline error,
and recipe stage 0 downloading only when no local copy is given."""
from __future__ import annotations

import hashlib
import io
import os
import socket
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_kd.data.audio import load_utterance
from asr_kd.errors import AsrKdError
from data_prep import an4, librispeech, yesno
from data_prep.download import BASE_URL_ENV, SHA256_ENV, Remote, fetch, fetch_and_unpack

REPO = Path(__file__).resolve().parents[1]
AN4_ROOT = Path(__file__).parents[2] / "shared/corpora/an4"
HINT = "--corpus DIR"


# ---------------------------------------------------------------- loopback server

class Server:
    """Serves `files` (URL path -> bytes). `cut` > 0: the first reply stops after that many body bytes
    (the connection closes short of its Content-Length). `ranges`: honour `Range: bytes=N-` (206, or 416
past the end), or
    answer 200 with the whole file as `python -m http.server` does. `requests` logs (path, Range)."""

    def __init__(self, files: dict[str, bytes], cut: int = 0, ranges: bool = True):
        self.files, self.cut, self.ranges, self.requests = files, cut, ranges, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.reply(self)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def reply(self, handler: BaseHTTPRequestHandler) -> None:
        path, range_header = handler.path.lstrip("/"), handler.headers.get("Range")
        self.requests.append((path, range_header))
        body = self.files.get(path)
        if body is None:
            handler.send_error(404)
            return
        start = int(range_header.removeprefix("bytes=").rstrip("-")) if range_header and self.ranges else 0
        if start and start >= len(body):
            handler.send_response(416)
            handler.send_header("Content-Range", f"bytes */{len(body)}")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        handler.send_response(206 if start else 200)
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        handler.send_header("Content-Length", str(len(body) - start))
        handler.end_headers()
        payload = body[start:]
        if self.cut and len(self.requests) == 1:
            payload = payload[:self.cut]
        handler.wfile.write(payload)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def vouch(tmp_path: Path, files: dict[str, bytes]) -> str:
    """A mirror serving re-packed bytes: their sha256 listed in a file (sha256sum format) for
    ASR_KD_DOWNLOAD_SHA256."""
    sums = tmp_path / "SHA256SUMS"
    sums.write_text("".join(f"{sha256(data)}  {name}\n" for name, data in files.items()))
    return str(sums)


# ---------------------------------------------------------------- tarballs in the publishers' layouts

def add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            add_file(tar, name, data)
    return buffer.getvalue()


def audio_bytes(samples: np.ndarray, fmt: str, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt, subtype="PCM_16")
    return buffer.getvalue()


def tone(seconds: float = 0.3, rate: int = 16000, pitch: float = 300) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * pitch * t) * 32767).astype(np.int16)


def an4_utterances() -> tuple[list[tuple[str, str]], list[tuple[str, str]], str]:
    """(fileid, transcript line) for the first utterance of 10 training speakers (so dev has one)
    and of one test speaker, and an4.dic: from the real corpus when it is beside the repository."""
    if not AN4_ROOT.is_dir():
        train = [(f"an4_clstk/spk{i:02d}/an{i}-spk{i:02d}-b", f"<s> YES GO </s> (an{i}-spk{i:02d}-b)")
                 for i in range(10)]
        return train, [("an4test_clstk/tspk/an9-tspk-b", "NO (an9-tspk-b)")], "GO  G OW\nNO  N OW\nYES  Y EH S\n"
    parts = []
    for part in ("train", "test"):
        etc = AN4_ROOT / "etc"
        pairs = zip(etc.joinpath(f"an4_{part}.fileids").read_text().split(),
                    etc.joinpath(f"an4_{part}.transcription").read_text().splitlines())
        firsts = {}
        for fileid, line in pairs:
            firsts.setdefault(Path(fileid).parent.name, (fileid, line))
        parts.append([firsts[s] for s in sorted(firsts)][:10 if part == "train" else 1])
    return parts[0], parts[1], (AN4_ROOT / "etc" / "an4.dic").read_text()


def an4_samples(fileid: str) -> np.ndarray:
    flac = (AN4_ROOT / "wav" / fileid).with_suffix(".flac")
    return sf.read(flac, dtype="int16")[0] if flac.is_file() else tone(pitch=200 + len(fileid))


def an4_files(ext: str) -> dict[str, bytes]:
    """A small AN4 in the CMU release layout (an4/etc, an4/wav/...<ext>), audio as SPHERE or FLAC."""
    train, test, dic = an4_utterances()
    files = {"an4/etc/an4.dic": dic.encode()}
    for part, items in (("train", train), ("test", test)):
        files[f"an4/etc/an4_{part}.fileids"] = "".join(f"{f}\n" for f, _ in items).encode()
        files[f"an4/etc/an4_{part}.transcription"] = "".join(f"{line}\n" for _, line in items).encode()
        for fileid, _ in items:
            files[f"an4/wav/{fileid}{ext}"] = audio_bytes(an4_samples(fileid), "NIST" if ext == ".sph" else "FLAC")
    return files


@pytest.fixture(scope="module")
def an4_tarball() -> bytes:
    return tarball(an4_files(".sph"))


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


# ---------------------------------------------------------------- the four cases

def test_clean_download_gives_the_data_dirs_of_a_local_copy(tmp_path, monkeypatch, an4_tarball):
    files = {"an4_sphere.tar.gz": an4_tarball}
    monkeypatch.setenv(SHA256_ENV, vouch(tmp_path, files))
    with Server(files) as server:
        monkeypatch.setenv(BASE_URL_ENV, server.url)
        assert an4.main(["download", "--dest", str(tmp_path / "dl")]) == 0
        assert an4.main(["download", "--dest", str(tmp_path / "dl")]) == 0  # unpacked already: no request
    assert server.requests == [("an4_sphere.tar.gz", None)]
    assert (tmp_path / "dl" / "an4_sphere.tar.gz").read_bytes() == an4_tarball
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == [".an4_sphere.tar.gz.unpacked", "an4",
                                                                    "an4_sphere.tar.gz"]
    write_tree(tmp_path / "local", an4_files(".flac"))
    downloaded = an4.prepare(tmp_path / "dl", tmp_path / "data_dl")
    local = an4.prepare(tmp_path / "local", tmp_path / "data_local")
    for name in ("train", "dev", "test"):
        assert downloaded[name].text == local[name].text and downloaded[name].utt2spk == local[name].utt2spk
        assert downloaded[name].utt2dur == local[name].utt2dur
        assert all(p.endswith(".sph") for p in downloaded[name].wav_scp.values())
        utt = sorted(downloaded[name].text)[0]
        np.testing.assert_array_equal(load_utterance(downloaded[name], utt), load_utterance(local[name], utt))
    assert (tmp_path / "data_dl/local/dict/lexicon.txt").read_text() == \
        (tmp_path / "data_local/local/dict/lexicon.txt").read_text()


@pytest.mark.parametrize("ranges", [True, False], ids=["range", "no-range"])
def test_interrupted_download_resumes(tmp_path, monkeypatch, an4_tarball, ranges):
    files = {"an4_sphere.tar.gz": an4_tarball}
    monkeypatch.setenv(SHA256_ENV, vouch(tmp_path, files))
    cut = len(an4_tarball) // 3
    dest = tmp_path / "dl"
    with Server(files, cut=cut, ranges=ranges) as server:
        monkeypatch.setenv(BASE_URL_ENV, server.url)
        with pytest.raises(AsrKdError, match=rf"connection closed early; {cut} bytes kept in .*\.part, re-run to resume"):
            fetch(an4.ARCHIVE, dest, HINT)
        assert not (dest / "an4_sphere.tar.gz").exists()
        assert (dest / "an4_sphere.tar.gz.part").stat().st_size == cut
        target = fetch(an4.ARCHIVE, dest, HINT)
    assert server.requests == [("an4_sphere.tar.gz", None), ("an4_sphere.tar.gz", f"bytes={cut}-")]
    assert target.read_bytes() == an4_tarball
    assert sorted(p.name for p in dest.iterdir()) == ["an4_sphere.tar.gz"]


@pytest.mark.parametrize("extra", [0, 5], ids=["whole-part", "part-too-long"])
def test_part_at_or_past_the_end_is_finished_or_restarted(tmp_path, monkeypatch, an4_tarball, extra):
    """A run killed between the last byte and the rename (416, the part is whole: no body sent), or
    a part longer than the file (416 with another length: start over)."""
    files = {"an4_sphere.tar.gz": an4_tarball}
    monkeypatch.setenv(SHA256_ENV, vouch(tmp_path, files))
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl/an4_sphere.tar.gz.part").write_bytes(an4_tarball + b"x" * extra)
    with Server(files) as server:
        monkeypatch.setenv(BASE_URL_ENV, server.url)
        assert fetch(an4.ARCHIVE, tmp_path / "dl", HINT).read_bytes() == an4_tarball
    restart = [("an4_sphere.tar.gz", None)] if extra else []
    assert server.requests == [("an4_sphere.tar.gz", f"bytes={len(an4_tarball) + extra}-"), *restart]
    assert not (tmp_path / "dl/an4_sphere.tar.gz.part").exists()


def test_corrupted_download_is_refused_by_its_checksum(tmp_path, monkeypatch, an4_tarball):
    monkeypatch.setenv(SHA256_ENV, vouch(tmp_path, {"an4_sphere.tar.gz": an4_tarball}))
    corrupt = bytearray(an4_tarball)
    corrupt[len(corrupt) // 2] ^= 0xFF
    dest = tmp_path / "dl"
    with Server({"an4_sphere.tar.gz": bytes(corrupt)}) as server:
        monkeypatch.setenv(BASE_URL_ENV, server.url)
        with pytest.raises(AsrKdError, match=rf"arrived corrupt \(sha256 {sha256(corrupt)}, expected "
                                             rf"{sha256(an4_tarball)}\); deleted"):
            fetch_and_unpack(an4.ARCHIVE, dest, HINT)
    assert list(dest.iterdir()) == []  # no archive, no part, nothing unpacked


def test_builtin_size_and_md5_are_checked(tmp_path, monkeypatch):
    data = b"word W ER D\n" * 100
    good = Remote("http://unused", "11/lexicon.txt", size=len(data), md5=hashlib.md5(data).hexdigest())
    with Server({"11/lexicon.txt": data, "11/short.txt": data[:-1]}) as server:
        monkeypatch.setenv(BASE_URL_ENV, server.url)
        assert fetch(good, tmp_path, HINT).read_bytes() == data
        short = Remote("http://unused", "11/short.txt", size=len(data))
        with pytest.raises(AsrKdError, match=rf"\({len(data) - 1} bytes, expected {len(data)}\)"):
            fetch(short, tmp_path, HINT)
        wrong_md5 = Remote("http://unused", "11/short.txt", md5="0" * 32)
        with pytest.raises(AsrKdError, match=r"\(md5 [0-9a-f]{32}, expected 0{32}\)"):
            fetch(wrong_md5, tmp_path, HINT)


def test_offline_error_is_one_line_naming_url_and_local_copy(tmp_path, monkeypatch, capsys):
    url = closed_port_url()
    monkeypatch.setenv(BASE_URL_ENV, url)
    assert an4.main(["download", "--dest", str(tmp_path / "dl")]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and err.endswith(lines[0] + "\n"), err
    assert f"cannot download {url}/an4_sphere.tar.gz (" in lines[0]
    assert "give a local copy instead: --corpus DIR or AN4_CORPUS=DIR" in lines[0]


# ---------------------------------------------------------------- every corpus honours the base URL

def librispeech_subset(subset: str, reader: str, chapter: str) -> bytes:
    """A subset tarball in OpenSLR's layout: LibriSpeech/<subset>/<reader>/<chapter>/..., 2 utterances."""
    spk = f"{reader}-{chapter}"
    files = {f"LibriSpeech/{subset}/{reader}/{chapter}/{spk}.trans.txt": f"{spk}-0000 HELLO WORLD\n{spk}-0001 WORLD\n"
             .encode(), "LibriSpeech/README.TXT": b"readme\n"}
    files.update({f"LibriSpeech/{subset}/{reader}/{chapter}/{spk}-000{i}.flac": audio_bytes(tone(), "FLAC")
                  for i in (0, 1)})
    return tarball(files)


def yesno_and_mini_librispeech() -> dict[str, bytes]:
    names = ["0_0_1_1", "1_1_0_0", "0_1_0_1", "1_0_1_0"]
    return {"1/waves_yesno.tar.gz": tarball({f"waves_yesno/{n}.wav": audio_bytes(tone(rate=8000), "WAV", 8000)
                                             for n in names}),
            "31/dev-clean-2.tar.gz": librispeech_subset("dev-clean-2", "19", "198"),
            "31/train-clean-5.tar.gz": librispeech_subset("train-clean-5", "84", "121"),
            "11/librispeech-lexicon.txt": b"HELLO\tHH AH0 L OW1\nWORLD\tW ER1 L D\n"}


def test_yesno_and_librispeech_download_through_the_mirror(tmp_path, monkeypatch):
    files = yesno_and_mini_librispeech()
    del files["31/train-clean-5.tar.gz"]
    monkeypatch.setenv(SHA256_ENV, vouch(tmp_path, files))
    with Server(files) as server:
        monkeypatch.setenv(BASE_URL_ENV, server.url)
        assert yesno.main(["download", "--dest", str(tmp_path / "yesno")]) == 0
        assert librispeech.main(["download", "--dest", str(tmp_path / "libri"), "--subsets", "dev-clean-2",
                                 "--lexicon"]) == 0
    assert sorted(path for path, _ in server.requests) == sorted(files)
    assert len(yesno.prepare(tmp_path / "yesno", tmp_path / "data_yesno")["train"]) == 3  # Kaldi's split: 31 of 60, 3 of 4
    sets = librispeech.prepare(tmp_path / "libri", tmp_path / "data_libri", tmp_path / "libri/librispeech-lexicon.txt")
    assert sets["dev_clean_2"].text == {"19-198-0000": "HELLO WORLD", "19-198-0001": "WORLD"}


def test_every_published_file_has_a_checksum_or_size():
    remotes = [an4.ARCHIVE, yesno.ARCHIVE, librispeech.LEXICON, *librispeech.SUBSET_ARCHIVES.values(),
               *librispeech.LMS.values()]
    for remote in remotes:
        assert remote.md5 or remote.sha256 or remote.size, remote
        assert remote.url.startswith(("http://www.speech.cs.cmu.edu/", "https://www.openslr.org/resources/"))
    with pytest.raises(ValueError, match="needs a checksum or a size"):
        Remote("http://x", "y.tar.gz")


# ---------------------------------------------------------------- recipe stage 0

def stage0(root: Path, *args: str, env: dict[str, str], corpus: str = "an4") -> subprocess.CompletedProcess:
    cmd = ["bash", str(REPO / "recipes" / corpus / "run.sh"), "--python", sys.executable, "--stop-stage", "0",
           "--data", str(root / "data"), "--exp", str(root / "exp"), "--downloads", str(root / "downloads"),
           "--shared-corpus", str(root / "no-shared-copy"), *args]
    return subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=300)


def test_stage0_downloads_only_without_a_local_copy(tmp_path, an4_tarball):
    files = {"an4_sphere.tar.gz": an4_tarball}
    env = {SHA256_ENV: vouch(tmp_path, files)}
    with Server(files) as server:
        out = stage0(tmp_path / "fetched", env={**env, BASE_URL_ENV: server.url})
    assert out.returncode == 0, out.stdout + out.stderr
    assert server.requests == [("an4_sphere.tar.gz", None)]
    assert (tmp_path / "fetched/downloads/.an4_sphere.tar.gz.unpacked").is_file()
    assert len((tmp_path / "fetched/data/test/text").read_text().splitlines()) == 1

    write_tree(tmp_path / "local", an4_files(".flac"))
    offline = {**env, BASE_URL_ENV: closed_port_url()}
    out = stage0(tmp_path / "given", "--corpus", str(tmp_path / "local/an4"), env=offline)
    assert out.returncode == 0, out.stdout + out.stderr
    assert not (tmp_path / "given/downloads").exists()
    for name in ("train", "dev", "test"):
        for table in ("text", "utt2spk", "spk2utt", "utt2dur"):
            assert (tmp_path / f"given/data/{name}/{table}").read_text() == \
                (tmp_path / f"fetched/data/{name}/{table}").read_text()

    out = stage0(tmp_path / "offline", env=offline)
    assert out.returncode == 1 and len(out.stderr.splitlines()) == 1, out.stderr
    assert f"cannot download {offline[BASE_URL_ENV]}/an4_sphere.tar.gz" in out.stderr
    assert "give a local copy instead: --corpus DIR or AN4_CORPUS=DIR" in out.stderr


def test_yesno_and_librispeech_stage0_download_what_is_not_given(tmp_path):
    files = yesno_and_mini_librispeech()
    with Server(files) as server:
        env = {SHA256_ENV: vouch(tmp_path, files), BASE_URL_ENV: server.url}
        yes = stage0(tmp_path / "yesno", env=env, corpus="yesno")
        mini = stage0(tmp_path / "libri", "--train-set", "train_clean_5", "--dev-set", "dev_clean_2", "--test-set",
                      "dev_clean_2", env=env, corpus="librispeech")
    assert yes.returncode == 0 and mini.returncode == 0, yes.stdout + yes.stderr + mini.stdout + mini.stderr
    assert sorted(path for path, _ in server.requests) == sorted(files)  # dev-clean-2 once, though dev and test
    assert len((tmp_path / "yesno/data/test/text").read_text().splitlines()) == 1  # Kaldi's split: 3 of 4 train
    assert (tmp_path / "libri/data/train_clean_5/text").read_text() == "84-121-0000 HELLO WORLD\n84-121-0001 WORLD\n"
