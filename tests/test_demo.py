"""`lgvq demo` on tiny runs, driven through Gradio's Python client: every tab's endpoint."""

import socket

import gradio_client  # the demo extra is part of the dev install
import pytest
from PIL import Image

from lgvq.api import train
from tests.conftest import tiny_head_config, tiny_prior_config


@pytest.fixture(scope="module")
def page(tmp_path_factory, tiny_store):
    from lgvq.demo import DemoRuns, build_demo

    root = tmp_path_factory.mktemp("demo")
    train("prior", [tiny_prior_config(root, tiny_store)])
    train("captioner", [tiny_head_config(root, tiny_store, name="captioner")])
    train("vqa", [tiny_head_config(root, tiny_store, name="vqa")])
    demo = build_demo(DemoRuns(prior=root / "prior", captioner=root / "captioner", vqa=root / "vqa"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
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
