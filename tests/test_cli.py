import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from omni_gpt2o.checkpoint import save_checkpoint
from omni_gpt2o.cli import build_parser, main
from omni_gpt2o.config import SCHEDULE_POWER


@pytest.fixture
def ckpt(micro_model, tmp_path):
    torch.nn.init.normal_(micro_model.decoder.conv_out.weight, std=0.3)
    return save_checkpoint(micro_model, tmp_path / "ckpt")


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err
    return err


def test_make_shapes(tmp_path, capsys):
    argv = ["make-shapes", "--out", str(tmp_path / "s"), "--num-images", "7", "--split", "val", "--size", "48"]
    assert main(argv) == 0
    data = json.loads((tmp_path / "s" / "captions.json").read_text())
    assert len(data["images"]) == 7 and data["images"][0]["width"] == 48
    assert len(list((tmp_path / "s" / "images").glob("*.png"))) == 7
    argv = ["make-shapes", "--out", str(tmp_path / "p"), "--num-images", "5", "--two-object-share", "1"]
    assert main(argv) == 0
    objects = json.loads((tmp_path / "p" / "captions.json").read_text())["objects"]
    assert len(objects) == 10  # every picture a pair


def test_seed_snake_case_flags_are_accepted():
    parser = build_parser()
    args = parser.parse_args(["train", "--data", "d", "--out", "o", "--batch_size", "4", "--learning_rate", "0.01",
                              "--kl_weight", "0.5", "--max_train_samples", "9", "--max_val_samples", "3",
                              "--warmup_epochs", "1", "--gradient_clip", "2", "--latent_dim", "7",
                              "--save_interval", "2", "--checkpoint_path", "c", "--use_clearml", "--debug"])
    assert (args.batch_size, args.learning_rate, args.kl_weight, args.max_train_samples) == (4, 0.01, 0.5, 9)
    assert (args.max_val_samples, args.warmup_epochs, args.gradient_clip, args.latent_dim) == (3, 1.0, 2.0, 7)
    assert (args.save_interval, args.checkpoint_path, args.use_clearml, args.debug) == (2, "c", True, True)
    assert parser.parse_args(["train", "--data", "d", "--out", "o", "--lr", "0.5"]).learning_rate == 0.5


def test_train_flags_come_from_train_config():
    import dataclasses

    from omni_gpt2o.train import TrainConfig

    args = build_parser().parse_args(["train", "--data", "d", "--out", "o"])
    flags = [f for f in dataclasses.fields(TrainConfig) if f.metadata.get("flag")]
    assert len(flags) > 35
    for f in flags:  # one default, in one place
        if f.default is not dataclasses.MISSING:
            assert getattr(args, f.name) == f.default, f.name


@pytest.mark.parametrize("argv", [
    ["train", "--data", "d", "--out", "o", "--batch-size", "0"],
    ["train", "--data", "d", "--out", "o", "--learning-rate", "0"],
    ["train", "--data", "d", "--out", "o", "--kl-weight", "-1"],
    ["train", "--data", "d", "--out", "o", "--precision", "fp8"],
    ["train", "--data", "d", "--out", "o", "--minutes", "-1"],
    ["train", "--data", "d", "--out", "o", "--caption-dropout", "1.5"],
    ["train", "--data", "d", "--out", "o", "--learning-rate", "inf"],
    ["demo", "--minutes", "-1"],
    ["demo", "--curve-points", "-2"],
    ["make-shapes", "--out", "o", "--num-images", "4", "--size", "0"],
    ["precompute", "--data", "d", "--cache-dir", "c", "--num-workers", "-1"],
    ["generate", "--checkpoint", "c", "--out-dir", "o", "--prompt", "a", "--guidance", "nan"],
    ["evaluate", "--checkpoint", "c", "--data", "d", "--guidance", "inf"],
    ["train", "--data", "d", "--out", "o", "--no-such-flag"],
    ["generate", "--checkpoint", "c", "--out-dir", "o"],  # no prompt
    ["make-shapes", "--out", "o"],  # no --num-images
    ["frobnicate"],
])
def test_bad_flags_exit_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    _one_line_error(capsys)


def test_bad_paths_exit_with_one_line(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 1
    assert "no such folder" in _one_line_error(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 1
    assert "captions.json" in _one_line_error(capsys)
    assert main(["generate", "--checkpoint", str(tmp_path / "empty"), "--prompt", "a", "--out-dir", "o"]) == 1
    assert "not an Omni-GPT2o checkpoint" in _one_line_error(capsys)
    assert main(["train", "--data", str(tmp_path / "empty"), "--out", "o", "--preset", "nope"]) == 1
    _one_line_error(capsys)


def test_generate_writes_pictures_and_manifest(ckpt, tmp_path):
    prompts = ["a red circle on the left", "Космический кот на Марсе", "a cyan circle above a red square"]
    out = tmp_path / "gen"
    assert main(["generate", "--checkpoint", str(ckpt), "--prompt", *prompts, "--out-dir", str(out), "--seed", "7",
                 "--steps", "2", "--batch-size", "2", "--guidance", "2"]) == 0
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in lines] == prompts
    assert [r["file"] for r in lines] == ["0000.png", "0001.png", "0002.png"]
    assert [r["seed"] for r in lines] == [7, 8, 9]
    first = (out / "0001.png").read_bytes()
    # grid.png: four columns, each picture at twice its size with its prompt underneath
    grid, picture = Image.open(out / "grid.png"), Image.open(out / "0000.png")
    assert grid.width == 4 * 2 * picture.width and grid.height > 2 * picture.height
    assert grid.crop((0, 0, 2 * picture.width, 2 * picture.height)).tobytes() == \
        picture.resize((2 * picture.width, 2 * picture.height), Image.NEAREST).tobytes()
    # The same prompt, seed and flags give the same picture, alone or in another batch.
    pf = tmp_path / "prompts.txt"
    pf.write_text("\nКосмический кот на Марсе\n\n", encoding="utf-8")
    assert main(["generate", "--checkpoint", str(ckpt), "--prompts-file", str(pf), "--out-dir", str(tmp_path / "g2"),
                 "--seed", "8", "--steps", "2", "--guidance", "2"]) == 0
    assert (tmp_path / "g2" / "0000.png").read_bytes() == first
    # --schedule-power reaches the sampler and the manifest.
    assert main(["generate", "--checkpoint", str(ckpt), "--prompts-file", str(pf), "--out-dir", str(tmp_path / "g3"),
                 "--seed", "8", "--steps", "2", "--guidance", "2", "--schedule-power", "1"]) == 0
    assert json.loads((tmp_path / "g3" / "manifest.jsonl").read_text())["schedule_power"] == 1.0
    assert lines[0]["schedule_power"] == SCHEDULE_POWER
    assert (tmp_path / "g3" / "0000.png").read_bytes() != first


def test_generate_rejects_empty_prompts_and_bad_drafts(ckpt, tmp_path, capsys):
    assert main(["generate", "--checkpoint", str(ckpt), "--prompt", " ", "--out-dir", str(tmp_path / "o")]) == 1
    assert "empty prompt" in _one_line_error(capsys)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert main(["generate", "--checkpoint", str(ckpt), "--prompt", "a", "--out-dir", str(tmp_path / "o"),
                 "--draft", str(tmp_path / "broken.png")]) == 1
    assert "--draft" in _one_line_error(capsys)
    with pytest.raises(SystemExit):
        main(["generate", "--checkpoint", str(ckpt), "--prompt", "a", "--out-dir", "o", "--schedule-power", "0"])


def test_generate_from_a_draft_picture_saves_drafts(ckpt, tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 32), (0, 0, 255)).save(tmp_path / "draft.png")
    out = tmp_path / "o"
    assert main(["generate", "--checkpoint", str(ckpt), "--prompt", "a blue square", "--out-dir", str(out),
                 "--draft", str(tmp_path / "draft.png"), "--draft-strength", "0.5", "--save-drafts",
                 "--steps", "2"]) == 0
    record = json.loads((out / "manifest.jsonl").read_text())
    assert (out / record["draft_file"]).is_file()


def test_train_from_the_command_line(shapes_splits, tmp_path):
    train_dir, val_dir = shapes_splits
    out = tmp_path / "run"
    assert main(["train", "--data", str(train_dir), "--val-data", str(val_dir), "--out", str(out), "--preset", "micro",
                 "--max-steps", "3", "--batch_size", "8", "--max_val_samples", "8"]) == 0
    assert (out / "checkpoints" / "best" / "model.safetensors").is_file()
    assert json.loads((out / "train_config.json").read_text())["batch_size"] == 8


def test_module_entry_point_reports_errors_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "omni_gpt2o", "generate", "--checkpoint", str(tmp_path / "none"),
                             "--prompt", "a red circle", "--out-dir", str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    help_text = subprocess.run([sys.executable, "-m", "omni_gpt2o", "--help"], capture_output=True, text=True,
                               timeout=120).stdout
    for command in ("make-shapes", "train", "generate", "demo"):
        assert command in help_text


def test_use_clearml_without_clearml_is_one_clear_line(shapes_splits, tmp_path, capsys):
    pytest.importorskip("torch")
    try:
        import clearml  # noqa: F401

        pytest.skip("clearml is installed here")
    except ImportError:
        pass
    train_dir, _ = shapes_splits
    assert main(["train", "--data", str(train_dir), "--out", str(tmp_path / "run"), "--preset", "micro",
                 "--max-steps", "1", "--use_clearml"]) == 1
    assert "pip install 'omni-gpt2o[clearml]'" in _one_line_error(capsys)


def test_precompute_of_only_unreadable_pictures_fails_with_one_line(tmp_path, capsys):
    from omni_gpt2o.data.shapes import make_shapes

    split = make_shapes(tmp_path / "broken", 8, split="train", seed=0, size=32)
    for png in (split / "images").glob("*.png"):
        png.write_bytes(b"not a picture")
    assert main(["precompute", "--data", str(split), "--cache-dir", str(tmp_path / "cache"), "--preset", "micro"]) == 1
    assert "could be read" in capsys.readouterr().err


def test_damaged_or_mismatched_weights_are_one_line(ckpt, tmp_path, micro_preset, capsys):
    from omni_gpt2o.model import build_model

    weights = ckpt / "model.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[: len(whole) // 2])  # a copy cut short
    argv = ["generate", "--checkpoint", str(ckpt), "--prompt", "a red circle", "--out-dir", str(tmp_path / "o")]
    assert main(argv) == 1
    assert "cannot be read as safetensors" in _one_line_error(capsys)
    other = save_checkpoint(build_model(micro_preset.replace(latent_dim=4)), tmp_path / "other")
    weights.write_bytes((other / "model.safetensors").read_bytes())  # tensors of another --latent-dim
    assert main(argv) == 1
    assert "does not match its config.json" in _one_line_error(capsys)


def test_an_out_dir_under_a_file_is_one_line(ckpt, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    assert main(["generate", "--checkpoint", str(ckpt), "--prompt", "a red circle", "--steps", "1",
                 "--out-dir", str(tmp_path / "a_file" / "pictures")]) == 1
    assert "Not a directory" in _one_line_error(capsys)


@pytest.mark.parametrize("index, problem", [
    ({"images": 5, "annotations": []}, "must be lists of objects"),
    ({"images": [{"id": 1, "file_name": "x.jpg"}], "annotations": [{"id": 1, "caption": "c"}]}, "lacks 'image_id'"),
    ({"images": [{"id": 1}], "annotations": [{"id": 1, "image_id": 1, "caption": "c"}]}, "lacks 'file_name'"),
])
def test_malformed_coco_files_are_one_line(tmp_path, capsys, index, problem):
    (tmp_path / "captions.json").write_text(json.dumps(index))
    assert main(["prepare-coco", "--annotations", str(tmp_path / "captions.json"), "--images", str(tmp_path),
                 "--out", str(tmp_path / "split")]) == 1
    assert problem in _one_line_error(capsys)


def test_every_flag_has_a_sentence_and_shows_its_default():
    import argparse

    from omni_gpt2o.cli import build_parser

    parser = build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"train", "generate", "evaluate", "demo", "serve"} <= set(subcommands)
    for name, sub in subcommands.items():
        text = sub.format_help()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and len(action.help.split()) >= 2, f"{name} {action.option_strings}: no help"
            shown = action.default not in (None, False) and not action.required
            assert not shown or f"default: {action.default}" in " ".join(text.split()).replace("- ", "-"), \
                f"{name} {action.option_strings}: default {action.default} not shown"


def test_epochs_minutes_and_max_steps_are_one_choice(tmp_path, capsys):
    from omni_gpt2o.cli import main

    (tmp_path / "data").mkdir()
    code = main(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--epochs", "3",
                 "--minutes", "1"])
    assert code == 1 and "--epochs and --minutes each set the run's length" in capsys.readouterr().err


def test_bench_assignments_read_numbers_tuples_booleans_and_words():
    from omni_gpt2o.options import parse_assignments

    got = parse_assignments(["kl-weight=0.03", "decoder_channels=(64, 128)", "decoder_word_values=false",
                             "text_layer_mix=True", "draft=noise"])
    assert got == {"kl_weight": 0.03, "decoder_channels": (64, 128), "decoder_word_values": False,
                   "text_layer_mix": True, "draft": "noise"}
    assert got["decoder_word_values"] is False  # never the string "false", which would read as true


MODEL_LIBRARIES = ("torch", "transformers", "timm", "diffusers", "accelerate")
# Runs the command line in a fresh process, then prints which model libraries it had imported.
IMPORTS_OF = """
import json, sys
from omni_gpt2o.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as stop:
    code = stop.code
print(json.dumps({"code": code, "loaded": [m for m in LIBRARIES if m in sys.modules]}))
""".replace("LIBRARIES", repr(MODEL_LIBRARIES))


def imports_of(*argv: str) -> dict:
    done = subprocess.run([sys.executable, "-c", IMPORTS_OF, *argv], capture_output=True, text=True, timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("command", [[], *([name] for name in build_parser()._subparsers._group_actions[0].choices)])
def test_help_imports_no_model_library(command):
    assert imports_of(*command, "--help") == {"code": 0, "loaded": []}


def test_the_data_commands_import_no_model_library(tmp_path):
    assert imports_of("make-shapes", "--out", str(tmp_path / "shapes"), "--num-images", "3", "--size", "32") == \
        {"code": 0, "loaded": []}
    assert imports_of("make-emoji", "--out", str(tmp_path / "emoji"), "--split", "val", "--size", "16") == \
        {"code": 0, "loaded": []}
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "1.jpg")
    (tmp_path / "captions.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "1.jpg"}],
        "annotations": [{"image_id": 1, "id": 1, "caption": "a dog"}]}))
    assert imports_of("prepare-coco", "--annotations", str(tmp_path / "captions.json"), "--images",
                      str(tmp_path / "images"), "--out", str(tmp_path / "split")) == {"code": 0, "loaded": []}
    assert (tmp_path / "split" / "captions.json").is_file()
    # The check itself sees a model library when one is loaded.
    assert "torch" in imports_of("generate", "--checkpoint", str(tmp_path), "--prompt", "x", "--out-dir",
                                 str(tmp_path / "out"))["loaded"]


def test_importing_the_package_loads_no_model_library():
    done = subprocess.run([sys.executable, "-c", "import sys, omni_gpt2o, omni_gpt2o.train; "
                           f"print([m for m in {MODEL_LIBRARIES!r} if m in sys.modules])"],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]"
