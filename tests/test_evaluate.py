import json
import shutil

from omni_gpt2o.checkpoint import save_checkpoint
from omni_gpt2o.cli import main
from omni_gpt2o.evaluate import format_scores, split_prompts


def _manifest_of_true_pictures(split_dir, out_dir, wrong=False):
    """A `generate`-style folder holding the data set's own pictures (optionally with wrong prompts)."""
    data = json.loads((split_dir / "captions.json").read_text())
    captions = {}
    for ann in data["annotations"]:
        captions.setdefault(ann["image_id"], ann["caption"])
    out_dir.mkdir()
    lines = []
    images = data["images"]
    for i, img in enumerate(images):
        name = f"{i:04d}.png"
        shutil.copy(split_dir / "images" / img["file_name"], out_dir / name)
        prompt_of = images[(i + 1) % len(images)]["id"] if wrong else img["id"]
        lines.append(json.dumps({"prompt": captions[prompt_of], "file": name, "seed": i}))
    (out_dir / "manifest.jsonl").write_text("\n".join(lines) + "\n")


def test_evaluate_a_manifest_of_true_pictures_scores_full_marks(shapes_splits, tmp_path, capsys):
    _, val_dir = shapes_splits
    _manifest_of_true_pictures(val_dir, tmp_path / "true")
    assert main(["evaluate", "--manifest", str(tmp_path / "true"), "--out", str(tmp_path / "true.json")]) == 0
    result = json.loads((tmp_path / "true.json").read_text())
    assert result["scores"]["all"]["full"] == 1.0
    assert "full" in capsys.readouterr().out
    _manifest_of_true_pictures(val_dir, tmp_path / "wrong", wrong=True)
    assert main(["evaluate", "--manifest", str(tmp_path / "wrong"), "--out", str(tmp_path / "wrong.json")]) == 0
    assert json.loads((tmp_path / "wrong.json").read_text())["scores"]["all"]["full"] < 0.2


def test_evaluate_a_checkpoint_on_a_split(micro_model, shapes_splits, tmp_path, capsys):
    _, val_dir = shapes_splits
    ckpt = save_checkpoint(micro_model, tmp_path / "ckpt")
    out = tmp_path / "scores.json"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(val_dir), "--max-prompts", "6",
                 "--steps", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["prompts"] == 6 and len(result["judgements"]) == 6
    assert result["scores"]["all"]["full"] == 0.0  # an untrained model draws nothing right
    table = format_scores(result["scores"])
    assert table.splitlines()[0].split()[:2] == ["group", "n"]


def test_evaluate_needs_data_with_a_checkpoint(micro_model, tmp_path, capsys):
    ckpt = save_checkpoint(micro_model, tmp_path / "ckpt")
    assert main(["evaluate", "--checkpoint", str(ckpt)]) == 1
    assert "--data" in capsys.readouterr().err


def test_split_prompts_cycle_through_captions(shapes_splits):
    _, val_dir = shapes_splits
    prompts = split_prompts(val_dir)
    assert len(prompts) == 16 and len(set(prompts)) == 16
    assert split_prompts(val_dir, 5) == prompts[:5]


class _DrawsTheCaption:
    """A stand-in pipeline that draws each pair caption's objects exactly (or with a change), left and right."""

    def __init__(self, change=None):
        self.change = change or (lambda objects: objects)

    def __call__(self, prompts, **kwargs):
        from types import SimpleNamespace

        from omni_gpt2o.data.shapes import Scene, ShapeObject, parse_caption, render_scene

        images = []
        for prompt in prompts:
            named = self.change([(colour, shape) for _, colour, shape in parse_caption(prompt).objects])
            objects = tuple(ShapeObject(c, s, "small", cx, 0.5, 0.24) for (c, s), cx in zip(named, (0.25, 0.75)))
            images.append(render_scene(Scene(objects, None, "to the left of"), 64))
        return SimpleNamespace(images=images)


def test_pair_outcomes_tell_unbound_shapes_from_missing_objects():
    from omni_gpt2o.evaluate import pair_outcomes

    prompts = ["a cyan circle to the left of a red square", "a blue triangle above a green circle",
               "a red circle on the left"]  # one object: not counted
    right = pair_outcomes(_DrawsTheCaption(), prompts, progress=False)
    assert right == {("held-out", "first", "right"): 1, ("seen", "second", "right"): 2, ("seen", "first", "right"): 1}
    swapped = pair_outcomes(_DrawsTheCaption(lambda o: [(o[0][0], o[1][1]), (o[1][0], o[0][1])]), prompts,
                            progress=False)  # each colour drawn in the other object's shape
    assert swapped == {("held-out", "first", "other's shape"): 1, ("seen", "first", "other's shape"): 1,
                       ("seen", "second", "other's shape"): 2}
    one = pair_outcomes(_DrawsTheCaption(lambda o: [(o[0][0], "triangle")]), prompts[:1], progress=False)
    assert one == {("held-out", "first", "another shape"): 1, ("seen", "second", "missing"): 1}
