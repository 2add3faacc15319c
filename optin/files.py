"""Damaged files: each file the tool reads and did not just write (model and pruned folders,
reports, ONNX files) is checked cheaply before a library parses it, so that a truncated or
garbage file is one DamagedFile naming it and the fix instead of a traceback from safetensors,
tokenizers or json.

The checks read little: a JSON parse, a UTF-8 decode, a safetensors header (safetensors itself
refuses a header that does not cover the file, so truncation is caught), a zip directory (torch's
.bin format keeps it at the end, so truncation is caught), an ONNX protobuf parse.
"""
from __future__ import annotations

import json
import os

from .errors import DamagedFile

# what rewrites a report: the command that wrote it, on the folder it lies in
REPORT_COMMANDS = {"export.json": "optin export", "engine.json": "optin engine", "profile.json": "optin profile",
                   "spec.json": "optin prune", "optin.json": "optin prune", "report.json": "optin prune"}
PROCESSOR_JSON = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                  "added_tokens.json", "vocab.json", "preprocessor_config.json")
PROCESSOR_TEXT = ("vocab.txt", "merges.txt")
RESTORE = "restore it from the original model (copy or download it again)"


def reason(e: BaseException) -> str:
    """An exception as a short clause: its type and the first line of its message."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def report_fix(path: str) -> str:
    """How to get a good copy of `path`: rerun the command that wrote it, else restore it."""
    name, folder = os.path.basename(path), os.path.dirname(path) or "."
    if name == "manifest.json" and os.path.basename(folder) == "engine":
        return f"run `optin engine {os.path.dirname(folder) or '.'}` again"
    if name in REPORT_COMMANDS:
        cmd = REPORT_COMMANDS[name]
        if cmd == "optin prune":  # its folder argument is the output, not the input
            return "run `optin prune` again to rewrite the folder"
        return f"run `{cmd} {folder}` again"
    return RESTORE


def damaged(path: str, why: str, fix: str | None = None) -> DamagedFile:
    return DamagedFile(f"{path} is damaged ({why}); {fix or report_fix(path)}")


def read_json(path: str, default=None, fix: str | None = None):
    """The parsed file; `default` if it does not exist; DamagedFile if it is not JSON."""
    if not os.path.exists(path):
        return default
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as e:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise damaged(path, f"not readable JSON: {reason(e)}", fix) from e


def check_text(path: str, fix: str | None = None) -> None:
    try:
        with open(path, encoding="utf-8") as fh:
            fh.read()
    except (OSError, ValueError) as e:
        raise damaged(path, f"not a UTF-8 text file: {reason(e)}", fix) from e


def check_safetensors(path: str, fix: str | None = None) -> None:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            f.keys()
    except Exception as e:  # SafetensorError (a Rust error type) and OSError
        raise damaged(path, f"not a complete safetensors file: {reason(e)}", fix) from e


def check_torch_file(path: str, fix: str | None = None) -> None:
    """torch.save's zip format (torch >= 1.6), else the legacy pickle, which torch checks itself."""
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            zipfile.ZipFile(path).close()
            return
        with open(path, "rb") as fh:
            head = fh.read(1)
    except (OSError, zipfile.BadZipFile) as e:
        raise damaged(path, f"not a complete PyTorch checkpoint: {reason(e)}", fix) from e
    if head != b"\x80":  # the pickle protocol opcode every legacy torch.save file starts with
        raise damaged(path, "not a complete PyTorch checkpoint (neither a whole zip archive nor a pickle)", fix)


def check_model_files(folder: str, fix: str = RESTORE) -> None:
    """config.json (and the zoo's optin_zoo.json) and every weights file of a Hugging Face model
    folder, sharded ones included."""
    if not os.path.isdir(folder):
        return  # a hub id: transformers fetches and checks it
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name in ("config.json", "optin_zoo.json") or name.endswith(".index.json"):
            read_json(path, fix=fix)
        elif name.endswith(".safetensors"):
            check_safetensors(path, fix)
        elif name.endswith(".bin") and name.startswith("pytorch_model"):
            check_torch_file(path, fix)


def check_processor_files(folder: str, fix: str = RESTORE) -> None:
    """The tokenizer (or image processor) files a folder has: JSON that parses, text that decodes."""
    if not os.path.isdir(folder):
        return
    for name in PROCESSOR_JSON + PROCESSOR_TEXT:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            (read_json(path, fix=fix) if name.endswith(".json") else check_text(path, fix))


def check_onnx(path: str, error: BaseException | None = None) -> None:
    """DamagedFile if `path` is not a whole ONNX protobuf. Called when a runtime refused the file
    (its `error`), to tell a damaged file from a graph the runtime cannot run."""
    if not os.path.isfile(path):
        return
    folder = os.path.dirname(path) or "."
    fix = f"export it again: optin export {folder}" + (" --optimize" if path.endswith(".opt.onnx") else "")
    if os.path.getsize(path) == 0:
        raise damaged(path, "empty file", fix)
    try:
        import onnx
    except ImportError:
        return
    try:
        onnx.load(path, load_external_data=False)
    except Exception as e:  # google.protobuf's DecodeError and onnx's own errors
        raise damaged(path, f"not a whole ONNX model: {reason(e)}", fix) from e
    if error is not None and "INVALID_PROTOBUF" in str(error):  # ONNX Runtime's own parse failed
        raise damaged(path, "ONNX Runtime cannot parse it (INVALID_PROTOBUF)", fix)
