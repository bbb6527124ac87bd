import json

from PIL import Image, ImageDraw


def page(path, size=(900, 700)):
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((40, 40), "Hello dsocr", fill="black")
    image.save(path)
    return path


def test_ocr_json_end_to_end(dsocr, tiny_checkpoint, tmp_path):
    image = page(tmp_path / "p.png")
    out = dsocr("ocr", image, "--model", tiny_checkpoint, "--device", "cpu", "--mode", "gundam",
                    "--max-new-tokens", "5", "--json", "--logprobs")
    assert out.code == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["vision_tokens"] == 273 + 10 * 2 * (10 * 3 + 1)  # 900x700 -> 3 x 2 tiles
    assert result["prompt_tokens"] == result["vision_tokens"] + 5
    assert len(result["token_ids"]) == 5 and len(result["token_logprobs"]) == 5
    assert result["finish_reason"] == "length" and isinstance(result["text"], str)


def test_ocr_plain_text_and_raw(dsocr, tiny_checkpoint, tmp_path):
    image = page(tmp_path / "p.png")
    out = dsocr("ocr", image, "--model", tiny_checkpoint, "--device", "cpu", "--mode", "tiny",
                    "--max-new-tokens", "3", "--layout", "--raw")
    assert out.code == 0 and out.stdout.endswith("\n")


def test_ocr_errors_are_one_line(dsocr, tiny_checkpoint, tmp_path):
    missing = dsocr("ocr", tmp_path / "none.png", "--model", tiny_checkpoint)
    # an image that cannot be read fails alone (exit 1), as in every per-image command
    assert missing.code == 1 and missing.stderr.strip().splitlines() == [f"dsocr: {tmp_path / 'none.png'}: no such file or folder"]
    (tmp_path / "bad.png").write_bytes(b"not an image")
    bad = dsocr("ocr", tmp_path / "bad.png", "--model", tiny_checkpoint)
    assert bad.code == 1 and "cannot open this image" in bad.stderr and "Traceback" not in bad.stderr
    no_model = dsocr("ocr", page(tmp_path / "p.png"), "--model", tmp_path / "nowhere")
    assert no_model.code == 2 and "DSOCR_MODEL" in no_model.stderr and "Traceback" not in no_model.stderr
    usage = dsocr("ocr", page(tmp_path / "p.png"), "--mode", "huge")
    assert usage.code == 2


def test_info_keys_without_weights(dsocr, tiny_checkpoint):
    out = dsocr("info", "--keys", "--json")
    assert out.code == 0
    assert len(json.loads(out.stdout)["keys"]) == 2710
    tiny = json.loads(dsocr("info", "--model", tiny_checkpoint, "--json").stdout)
    assert tiny["decoder"]["hidden"] == 64 and tiny["vision_tokens_a4_page"]["base"] == 273
    full = json.loads(dsocr("info", "--json").stdout)
    assert 570e6 < full["parameters"]["active_per_token"] < 580e6
    assert full["parameters"]["total"] == 3_336_106_240
