"""Throw hostile inputs at skipsearch's front doors and count the answers.

    python scripts/probe_inputs.py [--specs 1000] [--coefficients 300]

Each try goes through the function the CLI calls for that input (what ``skipsearch run``, ``verify``,
``apply`` and every ``--storage`` do before anything is stored or sampled). A *clean* answer is either
acceptance or one ``UserError`` message (the CLI prints it and exits 2); anything else raised, or a try
that runs past 20 s, is *unclean*. Malicious pickles among the weight files must also never run: a marker
file they would create is checked after every try. Prints one table row per probe.
"""

from __future__ import annotations

import argparse
import os
import pickle
import random
import signal
import sys
import tempfile
import traceback
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

TIMEOUT_S = 20


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout()


def tally(name: str, tries: Iterable, answer: Callable[[object], None], marker: Path | None = None) -> dict:
    """Run every try; clean = accepted or a UserError; unclean = anything else (the first few are shown)."""
    from skipsearch.errors import UserError

    row = {"probe": name, "tries": 0, "clean": 0, "unclean": 0, "refused": 0}
    signal.signal(signal.SIGALRM, _alarm)
    for item in tries:
        row["tries"] += 1
        signal.alarm(TIMEOUT_S)
        try:
            answer(item)
            row["clean"] += 1
        except UserError as err:
            row["clean"] += 1
            row["refused"] += 1
            if not str(err).strip():
                row["clean"] -= 1
                row["unclean"] += 1
        except BaseException as err:  # noqa: BLE001 - counting is the point
            row["unclean"] += 1
            if row["unclean"] <= 3:
                print(f"UNCLEAN {name}: {item!r:.200}\n{''.join(traceback.format_exception(err))[-1500:]}")
        finally:
            signal.alarm(0)
        if marker is not None and marker.exists():
            row["unclean"] += 1
            print(f"UNCLEAN {name}: code ran from {item!r:.200}")
            marker.unlink()
    return row


def hypothesis_examples(strategy, count: int) -> list:
    """``count`` examples of a strategy, seeded, as the fuzz tests draw them."""
    from hypothesis import HealthCheck, given, settings

    out: list = []

    @settings(max_examples=count, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def draw(example):
        out.append(example)

    draw()
    return out


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def weight_files(folder: Path, marker: Path, rng: random.Random) -> list[Path]:
    """Malicious pickles (zip and plain), junk bytes, truncated and mis-shaped state dicts, and odd paths."""
    from skipsearch.models import load_model

    real = load_model("digits-0to4").denoiser.net.state_dict()
    files = []

    def save(name: str, obj, plain: bool = False) -> None:
        path = folder / name
        path.write_bytes(pickle.dumps(obj)) if plain else torch.save(obj, path)
        files.append(path)

    for i, obj in enumerate([Payload(marker), {"w": Payload(marker)}, [Payload(marker)], {"a": torch.zeros(1),
                                                                                          "b": Payload(marker)}]):
        save(f"evil{i}.pt", obj)
        save(f"evil{i}.pkl", obj, plain=True)
    for i in range(20):
        (folder / f"junk{i}.pt").write_bytes(rng.randbytes(rng.randint(0, 4096)))
        files.append(folder / f"junk{i}.pt")
    good = folder / "good.pt"
    torch.save(real, good)
    raw = good.read_bytes()
    for i in range(10):
        (folder / f"cut{i}.pt").write_bytes(raw[: rng.randint(0, len(raw) - 1)])
        files.append(folder / f"cut{i}.pt")
    keys = list(real)
    for i in range(10):
        state = dict(real)
        key = rng.choice(keys)
        state[key] = rng.choice([torch.zeros(3), torch.zeros(0), state[key].double() * float("nan"),
                                 torch.zeros(state[key].shape, dtype=torch.int64)])
        save(f"shape{i}.pt", state)
    save("empty-dict.pt", {})
    save("list.pt", [torch.zeros(1)])
    save("tensor.pt", torch.zeros(3))
    save("str-keys.pt", {1: torch.zeros(1)})
    files += [folder / "missing.pt", folder]
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(folder / "script.pt"))
    files.append(folder / "script.pt")
    return files


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


def reference_sets(folder: Path, marker: Path, rng: random.Random) -> list[str]:
    """Data set names that point at hostile images: folders and .npz files, random and hand-made."""
    names = ["", "folder:", "npz:", "digitz", "folder:/nonexistent", "npz:/nonexistent.npz", "folder:/etc",
             "npz:/etc/passwd", "folder:/dev", "npz:/dev/null"]
    for i in range(40):
        d = folder / f"f{i}"
        d.mkdir()
        for j in range(rng.randint(0, 3)):
            kind = rng.choice(["junk", "bomb", "tiny", "mixed"])
            if kind == "junk":
                (d / f"{j}.png").write_bytes(rng.randbytes(rng.randint(0, 300)))
            elif kind == "bomb":
                (d / f"{j}.png").write_bytes(_png(rng.choice([40000, 65535, 100000]), rng.choice([40000, 65535])))
            else:
                from PIL import Image

                size = (rng.randint(1, 40), rng.randint(1, 40)) if kind == "mixed" else (16, 16)
                Image.new(rng.choice(["L", "RGB", "RGBA", "1"]), size).save(d / f"{j}.png")
        names.append(f"folder:{d}")
    dtypes = [np.uint8, np.float32, np.int64, np.bool_, object]
    for i in range(60):
        path = folder / f"a{i}.npz"
        shape = tuple(rng.randint(0, 5) for _ in range(rng.randint(0, 5)))
        dtype = rng.choice(dtypes)
        if dtype is object:
            array = np.array([Payload(marker)] * max(1, int(np.prod(shape) or 1)), dtype=object)
        else:
            array = np.zeros(shape, dtype=dtype)
        key = rng.choice(["images", "arr_0", "other"])
        if rng.random() < 0.2:
            np.save(folder / f"a{i}.npy", array, allow_pickle=True)
            names.append(f"npz:{folder / f'a{i}.npy'}")
            continue
        np.savez(path, **{key: array})
        if rng.random() < 0.2:
            path.write_bytes(path.read_bytes()[: rng.randint(0, path.stat().st_size)])
        names.append(f"npz:{path}")
    return names


def storage_urls(rng: random.Random) -> list[str]:
    hand = ["", " ", "sqlite://", "sqlite:///:memory:", "sqlite:///file:x?mode=memory&uri=true", "foo://x",
            "mysql://u@h/db", "postgresql://u@127.0.0.1:99999/db", "postgresql://u@127.0.0.1:0/db",
            "postgresql://u@127.0.0.1:abc/db", "postgresql://u:p@127.0.0.1:1/db", "not a url", "://", "sqlite:",
            "sqlite:////nonexistent/dir/x.db", "sqlite:///\x00", "postgresql+nosuchdriver://u@127.0.0.1:1/db",
            "sqlite+pysqlcipher:///x.db", "oracle://u@h/db", "postgresql://", "sqlite:///" + "x" * 5000,
            "postgresql://u@[::1:1/db", "postgresql://u@127.0.0.1:1/db?sslmode=nonsense"]
    alphabet = "sqlitepostgrs:/@?=&%.+-_ 0123456789abc\x00\u00e9"
    rand = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(150)]
    rand += [rng.choice(["sqlite:///", "postgresql://u@127.0.0.1:1/", "sqlite:////tmp/"]) +
             "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20))) for _ in range(50)]
    return hand + rand


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--specs", type=int, default=1000)
    parser.add_argument("--coefficients", type=int, default=300)
    args = parser.parse_args()
    os.environ.setdefault("SKIPSEARCH_CACHE", tempfile.mkdtemp(prefix="probe-cache-"))
    from hostile import COEFFICIENT_FILES, RAW_TEXTS, SPECS

    from skipsearch import data
    from skipsearch.exchange import verify as exporting
    from skipsearch.metrics import inception
    from skipsearch.methods.diff_tuning.tuned_weights import LoadedWeights
    from skipsearch.models import load_model
    from skipsearch.resolve import check_names
    from skipsearch.specfile import load_spec
    from skipsearch.storage import Store

    work = Path(tempfile.mkdtemp(prefix="probe-"))
    marker = work / "PWNED"
    rng = random.Random(0)

    def spec_file(item) -> None:
        path = work / "spec.yaml"
        text = yaml.safe_dump(item) if isinstance(item, dict) else item
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        check_names(load_spec(path), str(path))

    def coefficient_file(item) -> None:
        import json

        import tomli_w

        doc, fmt = item
        try:
            text = {"yaml": yaml.safe_dump, "json": json.dumps, "toml": tomli_w.dumps}[fmt](doc)
        except (TypeError, ValueError):
            fmt, text = "json", json.dumps(doc)
        (work / f"c.{fmt}").write_text(text)
        exporting.check(work / f"c.{fmt}")

    model = load_model("digits-0to4").denoiser
    before = {k: v.clone() for k, v in model.net.state_dict().items()}

    def weights_file(path: Path) -> None:
        try:
            inception.weights_path(work / "cache", path)
        except Exception as err:
            from skipsearch.errors import UserError

            if not isinstance(err, UserError):
                raise
        try:
            LoadedWeights(model, path, None).remove()
        finally:
            if any(not torch.equal(model.net.state_dict()[k], v) for k, v in before.items()):
                raise AssertionError(f"apply of {path} changed the model")

    def reference(name: str) -> None:
        from skipsearch.errors import UserError

        images = data.load(name)
        if len(images) < 2:
            raise UserError("fewer than two images")  # what resolve() answers for a reference

    def storage(url: str) -> None:
        cwd = os.getcwd()
        os.chdir(work)
        try:
            Store(url).close()
        finally:
            os.chdir(cwd)

    specs = hypothesis_examples(SPECS, args.specs) + hypothesis_examples(RAW_TEXTS, 300)
    rows = [tally("specs", specs, spec_file),
            tally("coefficient files", hypothesis_examples(COEFFICIENT_FILES, args.coefficients), coefficient_file),
            tally("weight files", weight_files(work, marker, rng), weights_file, marker),
            tally("reference data", reference_sets(work, marker, rng), reference, marker),
            tally("storage URLs", storage_urls(rng), storage)]
    print(f"\n{'probe':20s} {'tries':>6s} {'clean':>6s} {'unclean':>8s}   (of the clean: refused with a message)")
    for r in rows:
        print(f"{r['probe']:20s} {r['tries']:6d} {r['clean']:6d} {r['unclean']:8d}   ({r['refused']} refused)")
    sys.exit(1 if any(r["unclean"] for r in rows) else 0)


if __name__ == "__main__":
    main()
