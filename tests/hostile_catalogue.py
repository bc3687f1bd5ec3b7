"""A generator of hostile Amazon-style catalogues: every kind of malformed record a scraped catalogue meets, each
with the outcome the indexer must reach (indexed, or one failure entry at a named stage).

Entry point: `build_hostile_catalogue(root, server, outside)`. `root` becomes the catalogue folder (products.jsonl
+ img/ + extra/ for `--allow-path`), `outside` holds the canary image that must never be read, `server` is an
`indexer_support.ImageServer` on 127.0.0.1 (its files are filled in here). Kinds are listed in `KINDS` order; the
returned `Catalogue` knows the expected counts, ids, stages, and the secrets that must never reach a log.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from indexer_support import bad_payloads, png_header_only, product_image_bytes
from PIL import Image

SECRET_PASSWORD = "hunter2SECRETPASS"
SECRET_TOKEN = "SECRETTOKENx9q"


@dataclass
class Expect:
    """One catalogue line and its fate: `indexed` ids, `failed` (id, stage) pairs (id "" = the line itself)."""

    kind: str
    line: bytes
    indexed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    title: str | None = None  # the title the store must hold for indexed[0], when checked


@dataclass
class Catalogue:
    path: Path
    lines: list[Expect]
    canary: Path
    allow_dir: Path

    @property
    def kinds(self) -> list[str]:
        return list(dict.fromkeys(e.kind for e in self.lines))

    @property
    def writes(self) -> int:
        """Records written (a repeated id is written each time it is met)."""
        return sum(len(e.indexed) for e in self.lines)

    @property
    def unique_ids(self) -> set[str]:
        return {i for e in self.lines for i in e.indexed}

    @property
    def failures(self) -> list[tuple[str, str, int]]:
        """(id, stage, line number) per expected failure entry."""
        return [(pid, stage, n) for n, e in enumerate(self.lines, start=1) for pid, stage in e.failed]


def _record(asin, images, title="Plain product", **extra) -> dict:
    record = {
        "main_category": "Cell Phones & Accessories",
        "title": title,
        "average_rating": 4.1,
        "rating_number": 12,
        "price": "$9.99",
        "images": [{"thumb": None, "large": ref, "hi_res": None, "variant": "MAIN"} for ref in images],
        "store": "ACME",
        "details": {"Color": "Blue"},
        "parent_asin": asin,
    }
    record.update(extra)
    return record


def _line(record: dict | str | bytes) -> bytes:
    if isinstance(record, bytes):
        return record
    if isinstance(record, str):
        return record.encode("utf-8")
    return json.dumps(record).encode("utf-8")  # ensure_ascii: lone surrogates travel as \\ud800 escapes


def _image(size: tuple[int, int], mode: str = "RGB", fmt: str = "PNG", color=(200, 30, 30)) -> bytes:
    img = Image.new("RGB", size, color)
    if mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def build_hostile_catalogue(root: Path, server, outside: Path) -> Catalogue:
    """Write the catalogue under `root` (see the module docstring) and return what the indexer must do with it."""
    img, extra = root / "img", root / "extra"
    for d in (img, extra, outside):
        d.mkdir(parents=True, exist_ok=True)
    canary = outside / "canary.png"
    canary.write_bytes(product_image_bytes(4242, fmt="PNG"))
    seed = iter(range(1000, 2000))

    def local(name: str, data: bytes | None = None) -> str:
        (img / name).write_bytes(data if data is not None else product_image_bytes(next(seed)))
        return f"img/{name}"

    def http(route: str, name: str, data: bytes | None = None) -> str:
        if data is not None or route in ("img", "slow", "trunc"):
            server.files.setdefault(name, data if data is not None else product_image_bytes(next(seed)))
        return server.url(route, name)

    os.mkfifo(img / "pipe.jpg")
    (img / "a_folder.jpg").mkdir()
    (img / "escape.png").symlink_to(canary)
    (img / "inside_link.png").symlink_to(root / local("link_target.png"))
    (extra / "allowed.jpg").write_bytes(product_image_bytes(next(seed)))
    bad = bad_payloads()
    ok = _record  # a well-formed record with one good local image
    deep = "[" * 10_000 + "]" * 10_000
    nested_ok: dict = {"leaf": 1}
    for _ in range(20):
        nested_ok = {"n": nested_ok}
    secret_url = (
        f"http://shopper:{SECRET_PASSWORD}@{server.base.removeprefix('http://')}/img/missing.jpg"
        f"?X-Amz-Signature={SECRET_TOKEN}"
    )

    E = Expect
    kinds: list[Callable[[], Expect]] = [
        # -- reading and parsing ----------------------------------------------------------------------------
        lambda: E("bom", b"\xef\xbb\xbf" + _line(ok("HBOM", [local("bom.jpg")])), ["HBOM:0"]),
        lambda: E("invalid_utf8", b'{"parent_asin": "HUTF", "title": "caf\xe9 \xff"}', [], [("", "read")]),
        lambda: E("blank_line", b"   \t ", []),
        lambda: E("crlf", _line(ok("HCRLF", [local("crlf.jpg")])) + b"\r", ["HCRLF:0"]),
        lambda: E("overlong_line", b'{"x": "' + b"a" * (17 * 1024 * 1024) + b'"}', [], [("", "read")]),
        lambda: E("truncated_json", b'{"parent_asin": "HTRUNC", "images": [', [], [("", "parse")]),
        lambda: E("deep_nesting", b'{"parent_asin": "HDEEP", "x": ' + deep.encode() + b"}", [], [("", "parse")]),
        lambda: E("huge_int_literal", b'{"parent_asin": "HINT", "price": ' + b"9" * 5000 + b"}", [], [("", "parse")]),
        lambda: E("trailing_garbage", _line(ok("HGARB", [local("garb.jpg")])) + b" }x", [], [("", "parse")]),
        lambda: E("json_array", b"[1, 2, 3]", [], [("", "validate")]),
        lambda: E("json_null", b"null", [], [("", "validate")]),
        # -- validation -------------------------------------------------------------------------------------
        lambda: E("missing_asin", _line({"title": "no asin", "images": [local("noasin.jpg")]}), [], [("", "validate")]),
        lambda: E("asin_list", _line(ok(["A", "B"], [local("asinlist.jpg")])), [], [("", "validate")]),
        lambda: E("asin_number", _line(ok(123456, [local("asinnum.jpg")])), ["123456:0"]),
        lambda: E("empty_images", _line(ok("HNOIMG", [])), [], [("HNOIMG", "validate")]),
        lambda: E("images_string", _line(ok("HIMGSTR", []) | {"images": "img/x.jpg"}), [], [("HIMGSTR", "validate")]),
        lambda: E(
            "image_without_ref",
            _line(ok("HNOREF", []) | {"images": [{"large": None, "hi_res": "None", "thumb": ""}]}),
            [],
            [("HNOREF:0", "validate")],
        ),
        lambda: E(
            "hf_column_images",
            _line(ok("HCOL", []) | {"images": {"large": [local("col0.jpg"), local("col1.jpg")]}}),
            ["HCOL:0", "HCOL:1"],
        ),
        # -- text ---------------------------------------------------------------------------------------------
        lambda: E("lone_surrogate_title", _line(ok("HSUR", [local("sur.jpg")], title="bad \ud800 half")), ["HSUR:0"],
                  title="bad \ufffd half"),
        lambda: E("nul_in_title", _line(ok("HNUL", [local("nul.jpg")], title="nul\x00here")), ["HNUL:0"], title="nulhere"),
        lambda: E("html_title", _line(ok("HHTML", [local("html.jpg")], title="<script>alert(1)</script><b>x</b>")),
                  ["HHTML:0"], title="<script>alert(1)</script><b>x</b>"),
        lambda: E("rtl_zero_width_title", _line(ok("HRTL", [local("rtl.jpg")], title="\u202eesac\u200b \u05e9\u05dc\u05d5\u05dd")),
                  ["HRTL:0"], title="\u202eesac\u200b \u05e9\u05dc\u05d5\u05dd"),
        lambda: E("whitespace_title", _line(ok("HWS", [local("ws.jpg")], title="a\tb\nc\u2028d  e")), ["HWS:0"],
                  title="a\tb\nc\u2028d  e"),
        lambda: E("zero_width_only_title", _line(ok("HZW", [local("zw.jpg")], title="\u200b\u200d")), ["HZW:0"]),
        lambda: E("huge_title", _line(ok("HBIGT", [local("bigt.jpg")], title="é" * 100_000)), ["HBIGT:0"]),
        lambda: E("number_title", _line(ok("HNUMT", [local("numt.jpg")], title=31337)), ["HNUMT:0"], title="31337"),
        lambda: E("emoji_title", _line(ok("HEMO", [local("emo.jpg")], title="case 📱🐆")), ["HEMO:0"], title="case 📱🐆"),
        lambda: E(
            "surrogates_in_category_and_meta",
            _line(ok("HSURM", [local("surm.jpg")], main_category="Cat\udc80", details={"k\ud800": "v\udfff"})),
            ["HSURM:0"],
        ),
        # -- numbers -----------------------------------------------------------------------------------------
        lambda: E("price_string", _line(ok("HPRICE", [local("price.jpg")], price="$1,299.99")), ["HPRICE:0"]),
        lambda: E("price_nan_literal", b'{"parent_asin": "HNAN", "price": NaN, "average_rating": Infinity, "images": ["'
                  + local("nan.jpg").encode() + b'"]}', ["HNAN:0"]),
        lambda: E("price_overflow", b'{"parent_asin": "HOVF", "price": 1e400, "rating_number": '
                  + b"9" * 400 + b', "images": ["' + local("ovf.jpg").encode() + b'"]}', ["HOVF:0"]),
        lambda: E("price_nan_string", _line(ok("HNANS", [local("nans.jpg")], price="NaN", average_rating="abc")), ["HNANS:0"]),
        lambda: E("price_object", _line(ok("HPOBJ", [local("pobj.jpg")], price={"amount": 5}, rating_number=-3)), ["HPOBJ:0"]),
        # -- files and paths ---------------------------------------------------------------------------------
        lambda: E("absolute_path_outside", _line(ok("HABS", [str(canary)])), [], [("HABS:0", "resolve")]),
        lambda: E("dotdot_path_outside", _line(ok("HDOT", [os.path.relpath(canary, root)])), [], [("HDOT:0", "resolve")]),
        lambda: E("symlink_out", _line(ok("HSYM", ["img/escape.png"])), [], [("HSYM:0", "resolve")]),
        lambda: E("file_url_outside", _line(ok("HFURL", [f"file://{canary}"])), [], [("HFURL:0", "resolve")]),
        lambda: E("device_path", _line(ok("HDEV", ["/dev/zero"])), [], [("HDEV:0", "resolve")]),
        lambda: E("nul_in_path", _line(ok("HNULP", ["img/a\x00.jpg"])), [], [("HNULP:0", "resolve")]),
        lambda: E("symlink_inside", _line(ok("HSYMIN", ["img/inside_link.png"])), ["HSYMIN:0"]),
        lambda: E("dotdot_inside", _line(ok("HDOTIN", ["img/../" + local("dotin.jpg")])), ["HDOTIN:0"]),
        lambda: E("allowed_extra_root", _line(ok("HALLOW", [str(extra / "allowed.jpg")])), ["HALLOW:0"]),
        lambda: E("fifo", _line(ok("HFIFO", ["img/pipe.jpg"])), [], [("HFIFO:0", "fetch")]),
        lambda: E("directory", _line(ok("HDIR", ["img/a_folder.jpg"])), [], [("HDIR:0", "fetch")]),
        lambda: E("missing_file", _line(ok("HMISS", ["img/not_there.jpg"])), [], [("HMISS:0", "fetch")]),
        # -- URLs -------------------------------------------------------------------------------------------
        lambda: E("data_url", _line(ok("HDATA", ["data:image/png;base64," + "iVBORw0KGgo" * 50])), [], [("HDATA:0", "resolve")]),
        lambda: E("ftp_url", _line(ok("HFTP", ["ftp://example.com/a.jpg"])), [], [("HFTP:0", "resolve")]),
        lambda: E("credentials_in_url", _line(ok("HCRED", [secret_url])), [], [("HCRED:0", "fetch")]),
        lambda: E("http_404", _line(ok("H404", [server.url("img", "gone.jpg")])), [], [("H404:0", "fetch")]),
        lambda: E("http_slow", _line(ok("HSLOW", [http("slow", "slow.jpg")])), [], [("HSLOW:0", "fetch")]),
        lambda: E("http_truncated", _line(ok("HTRUNCH", [http("trunc", "trunc.jpg")])), [], [("HTRUNCH:0", "fetch")]),
        lambda: E("http_half_image", _line(ok("HHALF", [http("img", "half.jpg", bad["truncated.jpg"])])), [], [("HHALF:0", "decode")]),
        lambda: E("http_html", _line(ok("HHTMLB", [http("img", "page.jpg", bad["not_an_image.jpg"])])), [], [("HHTMLB:0", "decode")]),
        lambda: E("http_good", _line(ok("HGOOD", [http("img", "good.jpg")])), ["HGOOD:0"]),
        # -- image content ----------------------------------------------------------------------------------
        lambda: E("aspect_wide", _line(ok("HWIDE", [local("wide.png", _image((60000, 3)))])), [], [("HWIDE:0", "decode")]),
        lambda: E("aspect_tall", _line(ok("HTALL", [local("tall.png", _image((3, 60000)))])), [], [("HTALL:0", "decode")]),
        lambda: E("bomb", _line(ok("HBOMB", [local("bomb.png", png_header_only(60_000, 60_000))])), [], [("HBOMB:0", "decode")]),
        lambda: E("zero_bytes", _line(ok("HZERO", [local("zero.jpg", b"")])), [], [("HZERO:0", "decode")]),
        lambda: E("corrupt_jpeg", _line(ok("HCORR", [local("corrupt.jpg", bad["corrupt.jpg"])])), [], [("HCORR:0", "decode")]),
        lambda: E("one_pixel", _line(ok("HONE", [local("one.png", _image((1, 1)))])), ["HONE:0"]),
        lambda: E("grey_png", _line(ok("HGREY", [local("grey.png", _image((40, 30), "L"))])), ["HGREY:0"]),
        lambda: E("palette_gif", _line(ok("HGIF", [local("pal.gif", _image((33, 20), "P", "GIF"))])), ["HGIF:0"]),
        lambda: E("wide_but_allowed", _line(ok("HBANNER", [local("banner.png", _image((400, 20)))])), ["HBANNER:0"]),
        # -- duplicates and meta ----------------------------------------------------------------------------
        lambda: E("duplicate_first", _line(ok("HDUP", [local("dup.jpg")], title="old title")), ["HDUP:0"]),
        lambda: E("duplicate_later", _line(ok("HDUP", [local("dup.jpg")], title="new title")), ["HDUP:0"], title="new title"),
        lambda: E("nested_meta", _line(ok("HNEST", [local("nest.jpg")], details=nested_ok)), ["HNEST:0"]),
        lambda: E("huge_meta", _line(ok("HMETA", [local("meta.jpg")], **{f"f{i}": "x" * 500 for i in range(40)})), ["HMETA:0"]),
        lambda: E("mixed_good_and_bad_images", _line(ok("HMIX", [local("mix0.jpg"), str(canary), local("mix2.jpg")])),
                  ["HMIX:0", "HMIX:2"], [("HMIX:1", "resolve")]),
    ]  # fmt: skip
    lines = [make() for make in kinds]
    path = root / "products.jsonl"
    with path.open("wb") as fh:
        for e in lines:
            fh.write(e.line + b"\n")
    return Catalogue(path=path, lines=lines, canary=canary, allow_dir=extra)


__all__ = ["SECRET_PASSWORD", "SECRET_TOKEN", "Catalogue", "Expect", "build_hostile_catalogue"]
