"""`lgvq demo` on tiny runs, driven through Gradio's Python client: every tab's endpoint."""

import socket
import struct
import threading
import time
import zlib

import gradio_client  # the demo extra is part of the dev install
import pytest
from PIL import Image

from lgvq.api import train
from tests.conftest import tiny_head_config, tiny_prior_config


@pytest.fixture(scope="module")
def page(tmp_path_factory, tiny_store):
    from lgvq.demo import DemoRuns, build_demo, launch_demo

    root = tmp_path_factory.mktemp("demo")
    train("prior", [tiny_prior_config(root, tiny_store)])
    train("captioner", [tiny_head_config(root, tiny_store, name="captioner")])
    train("vqa", [tiny_head_config(root, tiny_store, name="vqa")])
    demo = build_demo(DemoRuns(prior=root / "prior", captioner=root / "captioner", vqa=root / "vqa"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch_demo(demo, port=port, prevent_thread_lock=True, quiet=True)
    client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
    yield client, root
    demo.close()


def test_text_to_image_then_every_other_tab(page):
    client, root = page
    samples = client.predict("a small red circle", 3, 1.5, 1.0, 0, 1.0, 0, api_name="/generate")
    assert len(samples) == 3
    for s in samples:
        assert Image.open(s["image"]).size == (32, 32)  # the tiny tokenizer's resolution
        assert s["caption"] == "faithful" or s["caption"].startswith("not faithful: ")  # the shapes scorer
    image = gradio_client.handle_file(samples[0]["image"])

    caption = client.predict(image, 2, api_name="/caption")
    assert isinstance(caption, str)
    answer = client.predict(image, "what colour is the circle?", api_name="/answer")
    from lgvq.downstream.vqa import VQAHead

    assert answer in VQAHead.from_pretrained(root / "vqa" / "model").config.answers  # the closed set
    completions = client.predict(image, 0.5, "a small red circle", 2, 0, api_name="/complete")
    assert [Image.open(c["image"]).size for c in completions] == [(32, 32)] * 2
    grid, reconstruction, table = client.predict(image, api_name="/tokens")
    assert Image.open(grid).size == Image.open(reconstruction).size == (512, 512)
    assert len(table["data"]) == 4 * 4  # the tiny tokenizer's grid, one row a position


def test_a_user_error_reaches_the_page_in_the_cli_words(page):
    client, _ = page
    with pytest.raises(Exception, match="empty prompt"):
        client.predict("   ", 1, 1.5, 1.0, 0, 1.0, 0, api_name="/generate")
    with pytest.raises(Exception, match="empty question"):
        client.predict(None, "", api_name="/answer")


def test_the_demo_verb_without_runs_says_what_to_give(capsys):
    from lgvq.cli import main

    assert main(["demo"]) == 2 and "--run PIPELINE_DIR" in capsys.readouterr().err


def test_vqct_codes_are_shown_as_their_words(tmp_path):
    from lgvq.demo import code_words
    from lgvq.text.vocab import Vocabulary

    Vocabulary(adjectives=["red", "blue"], nouns=["circle", "square"]).save(tmp_path / "vocab")
    config = {"kind": "vqct", "vqct": {"vocab": str(tmp_path / "vocab")}}
    assert code_words(config) == ["red", "blue", "circle", "square"]  # ids: adjectives, then nouns + offset
    assert code_words({"kind": "vq"}) is None and code_words({"kind": "vqct", "vqct": {"vocab": "gone"}}) is None


# -- bad input through the client: one line in the CLI's words, and the page keeps serving -------------
def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (its data is one empty row: never decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def _refused(call, *words):
    with pytest.raises(Exception) as e:
        call()
    message = str(e.value)
    assert "\n" not in message.strip() and "Traceback" not in message, message
    assert all(w in message for w in words), message


def test_bad_input_gets_a_one_line_message_and_the_page_keeps_serving(page, tmp_path):
    client, _ = page
    generate = lambda prompt="a small red circle", n=1, cfg=1.5, temperature=1.0, top_k=0, top_p=1.0, seed=0: \
        client.predict(prompt, n, cfg, temperature, top_k, top_p, seed, api_name="/generate")
    _refused(lambda: generate(prompt=""), "empty prompt")
    _refused(lambda: generate(prompt="red " * 2500), "tokens", "at most")
    _refused(lambda: generate(prompt="a small zorblax circle blorp " * 200), "tokens")
    for n in (0, -1, 10_000):
        _refused(lambda: generate(n=n), "images", "1 to 16")
    for cfg in ("nan", "inf", -5):  # JSON has no NaN: a client sends it as text
        _refused(lambda: generate(cfg=cfg), "cfg_scale")
    _refused(lambda: generate(cfg="strong"), "guidance must be a number")
    _refused(lambda: generate(top_k=10**6), "top_k", "codebook size")
    assert len(generate(temperature=0, n=2)) == 2  # temperature 0 is greedy decoding, not an error
    assert len(generate(prompt="a small zorblax")) == 1  # an unknown word is only a word

    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not an image")
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_claiming(20_000, 20_000))
    large = tmp_path / "large.png"
    large.write_bytes(_png_claiming(5_000, 4_000))  # under PIL's own limit, over the page's
    whole = tmp_path / "whole.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(whole)
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[:60])
    for path, words in ((not_an_image, ("cannot read image",)), (huge, ("too large", "largest accepted")),
                        (large, ("5000 x 4000 pixels", "16,777,216")), (cut, ("cannot read image",))):
        for endpoint, args in (("/caption", (3,)), ("/tokens", ()), ("/complete", (0.5, "a red circle", 1, 0))):
            _refused(lambda: client.predict(gradio_client.handle_file(str(path)), *args, api_name=endpoint), *words)
    _refused(lambda: client.predict(gradio_client.handle_file(str(whole)), "what " * 1000, api_name="/answer"),
             "question", "at most")
    _refused(lambda: client.predict(gradio_client.handle_file(str(whole)), 0.5, "a red circle", 10_000, 0,
                                    api_name="/complete"), "completions", "1 to 16")
    oversized = tmp_path / "big.png"
    oversized.write_bytes(whole.read_bytes() + bytes(11 * 2**20))  # past the 10 MB upload cap
    _refused(lambda: client.predict(gradio_client.handle_file(str(oversized)), api_name="/tokens"),
             "exceeds the maximum file size")
    assert len(generate()) == 1  # still serving


def test_concurrent_clients_are_queued_and_all_answered(page):
    client, _ = page
    url = client.src
    errors, latencies = [], []

    def user(i):
        c = gradio_client.Client(url, verbose=False)
        for j in range(2):
            start = time.perf_counter()
            try:
                assert len(c.predict("a small red circle", 1, 1.5, 1.0, 0, 1.0, i * 10 + j, api_name="/generate")) == 1
            except Exception as e:  # noqa: BLE001 - collected and reported below
                errors.append(repr(e))
            latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a client hung"
    assert not errors and len(latencies) == 12, errors


def test_lgvq_codes_are_shown_as_their_nearest_words_through_the_alignment(tiny_config, tmp_path):
    import torch
    import torch.nn.functional as F

    from lgvq.cli import main
    from lgvq.data import shapes
    from lgvq.demo import DemoModels, DemoRuns, read_image

    assert main(["train-tokenizer", "--config", str(tiny_config), "alignment=lgvq", "train.max_steps=2",
                 "lgvq.visual_width=16", "lgvq.max_length=16"]) == 0
    models = DemoModels(DemoRuns(tokenizer=tmp_path / "run" / "model"))
    image = tmp_path / "image.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(image)
    _, _, table = models.tokens(str(image))
    content = set(shapes.COLOURS) | set(shapes.SHAPES)  # the tokenizer's data names these
    h, w = models.tokenizer.token_shape
    assert len(table) == h * w
    assert all(len(row[3].split(" / ")) == 3 and set(row[3].split(" / ")) <= content for row in table)

    # positions and words line up: a word whose feature is a position's visual token ranks first there
    near, tok = models.nearest_words(), models.tokenizer
    with torch.no_grad():
        ids = tok.encode(read_image(str(image), 32)[None])[0]
        z_vt = tok.aligner.visual_tokens(tok.quantizer.embed(ids[None]))[0, 1:]
    for position, word in ((5, 2), (11, 7)):
        near.vectors[word] = F.normalize(z_vt[position].float(), dim=-1)
        assert near(ids)[position][0] == near.words[word]
