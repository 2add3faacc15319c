"""The user's data as they have it: other column names, string labels, a label map, text pairs, a
separate calibration source; and the one-line errors when the data does not fit the model."""
import csv
import json
import random
import subprocess
import sys

import pytest
from conftest import WORDS, write_tiny_folder

from optin.data import DataOptions, model_examples, rotten_tomatoes
from optin.errors import BadData, BadInput
from optin.labels import parse_label_map

NAMES = {0: "negative", 1: "neutral", 2: "positive"}


@pytest.fixture(scope="module")
def named_bert(tmp_path_factory):
    """A tiny BERT classifier whose config names its classes (id2label / label2id). Its tokenizer
    is rebuilt from the vocabulary itself: transformers 5 ignores BertTokenizerFast(vocab_file=...),
    which leaves conftest's tokenizer with the special tokens only (every word [UNK]), and these
    tests read texts back from the token ids."""
    from transformers import BertTokenizerFast

    path = write_tiny_folder(tmp_path_factory.mktemp("named") / "bert", "bert")
    vocab = (path / "vocab.txt").read_text().split()
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(path)
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(id2label={str(k): v for k, v in NAMES.items()}, label2id={v: k for k, v in NAMES.items()})
    (path / "config.json").write_text(json.dumps(cfg))
    return path


def _config(folder):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(folder)


def write_rows(path, header, n, labels, seed=0, pair=False):
    """A CSV with the given header: texts (unique, and in the tokenizer's vocabulary: the first two
    words spell the row number), an optional second text, a distractor column, labels drawn from
    `labels`. Returns the rows as dicts."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [WORDS[i // len(WORDS)], WORDS[i % len(WORDS)]] + [rng.choice(WORDS) for _ in range(rng.randint(1, 6))]
        row = [" ".join(words)]
        if pair:
            row.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))))
        row += [str(rng.randint(1, 5)), rng.choice(labels)]
        rows.append(dict(zip(header, row)))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, header)
        w.writeheader()
        w.writerows(rows)
    return rows


def _prepare(model, data, **opts):
    from optin.prune import PruneConfig, prepare

    calib = opts.pop("calib", 8)
    return prepare(str(model), str(data), PruneConfig(calib=calib, max_length=32, data=DataOptions(**opts)),
                   log=lambda *_: None)


def _decoded(tok, batches):
    """(texts as the tokenizer gives them back, labels) of every example in the batches."""
    texts, labels = [], []
    for b in batches:
        texts += [tok.decode(ids, skip_special_tokens=True) for ids in b["input_ids"]]
        labels += b["labels"].tolist()
    return texts, labels


def test_other_columns_and_string_labels(named_bert, tmp_path):
    f = tmp_path / "reviews.csv"
    rows = write_rows(f, ["review", "stars", "verdict"], 30, ["Positive", "NEGATIVE", "neutral"])
    with pytest.raises(BadData, match="no text column.*--text-column"):
        _prepare(named_bert, f)
    with pytest.raises(BadData, match=r"no column 'body' \(--text-column body\); its columns are: review, stars, "
                                      "verdict"):
        _prepare(named_bert, f, text_column="body")
    path, model, tok, adapter, seq, calib_b, test_b, ds = _prepare(named_bert, f, text_column="review",
                                                                   label_column="verdict")
    texts, labels = _decoded(tok, calib_b + test_b)
    by_text = {r["review"]: r["verdict"].lower() for r in rows}
    ids = {v: k for k, v in NAMES.items()}
    assert sorted(texts) == sorted(by_text)  # every row once: the review column, not stars
    assert labels == [ids[by_text[t]] for t in texts]  # names matched case-insensitively
    assert sum(len(b["labels"]) for b in calib_b) == 8


def test_label_map(named_bert, tmp_path):
    f = tmp_path / "d.jsonl"
    rng = random.Random(1)
    recs = [{"text": f"good film {i}", "label": rng.choice(["good", "bad", "meh", "neutral"])} for i in range(24)]
    f.write_text("\n".join(json.dumps(r) for r in recs))
    config = _config(named_bert)
    want = {"good": 2, "bad": 0, "meh": 1, "neutral": 0}  # the map wins over the model's own name "neutral"
    m = parse_label_map("good=positive, bad=0,MEH=1,neutral=negative")
    _, cal, test = model_examples(str(f), DataOptions(label_map=m), config, "text", calib=6)
    got = sorted((t, y) for t, _, y in cal + test)
    assert got == sorted((r["text"], want[r["label"]]) for r in recs)

    with pytest.raises(BadData) as e:  # unmatched labels: all of them, the model's names and the fix, one line
        model_examples(str(f), DataOptions(label_map={"good": "positive"}), config, "text")
    msg = str(e.value)
    assert "'bad'" in msg and "'meh'" in msg and "'good'" not in msg and "\n" not in msg
    assert "0=negative, 1=neutral, 2=positive" in msg and "--label-map" in msg
    with pytest.raises(BadInput, match=r"'great' is neither a class id 0..2 nor one of the model's label names "
                                       r"\(0=negative"):
        model_examples(str(f), DataOptions(label_map={"good": "great"}), config, "text")
    with pytest.raises(BadInput, match="neither a class id 0..2"):
        model_examples(str(f), DataOptions(label_map={"good": "7"}), config, "text")
    for bad in ("pos", "=1", "pos=", ","):
        with pytest.raises(BadInput, match="--label-map"):
            parse_label_map(bad)


def test_string_labels_for_a_model_without_label_names(tiny_folders, tmp_path):
    f = tmp_path / "d.csv"
    write_rows(f, ["text", "stars", "label"], 10, ["pos", "neg"])
    with pytest.raises(BadData, match=r"labels '(pos|neg)', '(pos|neg)' are not among the model's labels \(it has no "
                                      r"label names, only class ids 0..2\); map them with --label-map, e.g. "
                                      r"--label-map neg=0,pos=1"):
        model_examples(str(f), DataOptions(), _config(tiny_folders["bert"]), "text")


def test_text_pairs_are_encoded_as_pairs(named_bert, tmp_path):
    f = tmp_path / "qa.csv"
    write_rows(f, ["question", "answer", "stars", "label"], 12, ["positive", "negative"], pair=True)
    *_, tok, _, _, calib_b, test_b, _ = _prepare(named_bert, f, pair_column="answer")
    sep = tok.sep_token_id
    for b in calib_b + test_b:  # [CLS] question [SEP] answer [SEP]; the second segment has token type 1
        assert all(int((row == sep).sum()) == 2 for row in b["input_ids"])
        assert int(b["token_type_ids"].max()) == 1
    *_, calib_b, _, _ = _prepare(named_bert, f)  # "answer" is no usual pair name: single texts
    assert all(int((row == sep).sum()) == 1 for row in calib_b[0]["input_ids"])
    with pytest.raises(BadData, match=r"no column 'reply' \(--pair-column reply\); its columns are: answer, label, "
                                      "question, stars"):
        _prepare(named_bert, f, pair_column="reply")


def test_pairs_in_calibration_but_not_in_evaluation(named_bert, tmp_path):
    pairs, singles = tmp_path / "pairs.csv", tmp_path / "singles.csv"
    write_rows(pairs, ["sentence1", "sentence2", "stars", "label"], 10, ["positive"], pair=True)
    write_rows(singles, ["text", "stars", "label"], 10, ["negative"])
    config = _config(named_bert)
    with pytest.raises(BadData, match=r"calibration data pairs.csv has text pairs \(column 'sentence2'\) but "
                                      r"evaluation data singles.csv has single texts"):
        model_examples(str(singles), DataOptions(calib_data=str(pairs)), config, "text")
    with pytest.raises(BadData, match=r"calibration data singles.csv has single texts .* evaluation data pairs.csv has "
                                      r"text pairs"):
        model_examples(str(pairs), DataOptions(calib_data=str(singles)), config, "text")


def test_a_pair_task_model_given_single_texts_gets_a_note(tmp_path):
    from transformers import BertConfig

    f = tmp_path / "d.csv"
    write_rows(f, ["text", "stars", "label"], 6, ["entailment", "contradiction"])
    nli = BertConfig(id2label={0: "entailment", 1: "neutral", 2: "contradiction"},
                     label2id={"entailment": 0, "neutral": 1, "contradiction": 2})
    notes = []
    model_examples(str(f), DataOptions(), nli, "text", log=notes.append)
    assert len(notes) == 1 and "sentence-pair task" in notes[0] and "--pair-column" in notes[0]
    notes.clear()
    plain = DataOptions(label_map={"entailment": "0", "contradiction": "1"})  # a model with no label names
    model_examples(str(f), plain, BertConfig(num_labels=3), "text", log=notes.append)
    assert notes == []


def test_calib_data_is_a_separate_source(named_bert, tmp_path):
    cal_f, eval_f = tmp_path / "cal.csv", tmp_path / "eval.csv"
    cal_rows = write_rows(cal_f, ["body", "stars", "gold"], 30, ["positive", "negative"], seed=1)
    eval_rows = write_rows(eval_f, ["body", "stars", "gold"], 20, ["neutral"], seed=2)
    *_, tok, _, _, calib_b, test_b, ds = _prepare(named_bert, eval_f, calib=8, calib_data=str(cal_f),
                                                  text_column="body", label_column="gold")
    cal_texts, cal_labels = _decoded(tok, calib_b)
    test_texts, test_labels = _decoded(tok, test_b)
    assert len(cal_texts) == 8 and set(cal_texts) <= {r["body"] for r in cal_rows} and 1 not in cal_labels
    assert sorted(test_texts) == sorted(r["body"] for r in eval_rows) and set(test_labels) == {1}  # all of it
    # the whole calibration file is the pool (the re-fit may take more than --calib of it)
    _, cal, test = model_examples(str(eval_f), DataOptions(calib_data=str(cal_f), text_column="body",
                                                           label_column="gold"), _config(named_bert), "text", 8)
    assert sorted(e[0] for e in cal) == sorted(r["body"] for r in cal_rows) and len(test) == 20


def test_fixed_sources_keep_their_splits_and_columns(named_bert, tmp_path):
    rt = rotten_tomatoes()
    config = _config(named_bert)
    _, cal, test = model_examples("rotten-tomatoes", DataOptions(), config, "text", calib=16)
    assert cal == rt.split("calib") and test == rt.split("test")  # no option: the documented split
    eval_f = tmp_path / "eval.csv"
    write_rows(eval_f, ["body", "stars", "gold"], 10, ["neutral"])
    _, cal, test = model_examples(str(eval_f), DataOptions(calib_data="rotten-tomatoes", text_column="body",
                                                           label_column="gold"), config, "text")
    assert cal == rt.split("calib") and len(test) == 10  # the column options are the CSV's
    with pytest.raises(BadInput, match="--text-column apply to CSV/JSONL files and hf: datasets; rotten-tomatoes has "
                                       "fixed columns"):
        model_examples("rotten-tomatoes", DataOptions(text_column="body"), config, "text")


def test_hf_columns(named_bert, tmp_path):
    """`hf:` data with other column names (a local dataset folder: train.csv and validation.csv)."""
    pytest.importorskip("datasets")
    tr = write_rows(tmp_path / "train.csv", ["body", "stars", "gold"], 12, ["positive"], seed=3)
    va = write_rows(tmp_path / "validation.csv", ["body", "stars", "gold"], 9, ["negative"], seed=4)
    ds, cal, test = model_examples(f"hf:{tmp_path}", DataOptions(text_column="body", label_column="gold"),
                                   _config(named_bert), "text")
    assert sorted(e[0] for e in cal) == sorted(r["body"] for r in tr) and {e[2] for e in cal} == {2}
    assert sorted(e[0] for e in test) == sorted(r["body"] for r in va) and {e[2] for e in test} == {0}
    with pytest.raises(BadData, match=r"no column 'verdict' \(--label-column verdict\); its columns are: body, gold, "
                                      "stars"):
        model_examples(f"hf:{tmp_path}", DataOptions(text_column="body", label_column="verdict"),
                       _config(named_bert), "text")


def test_cli_options(named_bert, tmp_path):
    """The options reach `optin prune` (and `optin run`) from the command line; a bad label is one line, exit 2."""
    from optin.cli import build_parser

    f = tmp_path / "d.csv"
    write_rows(f, ["review", "stars", "verdict"], 24, ["good", "bad"])
    out = tmp_path / "out"
    args = ["prune", str(named_bert), "--data", str(f), "--text-column", "review", "--label-column", "verdict",
            "--label-map", "good=positive,bad=negative", "--flops", "0.6", "--calib", "8", "--method", "fisher",
            "--no-fvcore", "--max-length", "16"]
    r = subprocess.run([sys.executable, "-m", "optin.cli", *args, "--out", str(out)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((out / "report.json").read_text())
    assert rep["calibration_examples"] == 8 and rep["accuracy"]["test_examples"] == 16
    assert rep["config"]["data"]["label_map"] == {"good": "positive", "bad": "negative"}
    bad = tmp_path / "bad"
    no_map = [a for a in args if a not in ("--label-map", "good=positive,bad=negative")]
    r = subprocess.run([sys.executable, "-m", "optin.cli", *no_map, "--out", str(bad)], capture_output=True, text=True,
                       timeout=600)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("optin")]  # the weights' progress bar comes first
    assert r.returncode == 2 and len(lines) == 1 and "are not among the model's labels" in lines[0], r.stderr
    assert not bad.exists()
    a = build_parser().parse_args(["run", "m", "--data", "d", "--out", "o", "--calib-data", "c", "--pair-column", "q"])
    assert (a.calib_data, a.pair_column) == ("c", "q")
