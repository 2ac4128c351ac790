"""/api/ask wiring: the generator (`mmindex.ask.generator`), loaded once, asked one
question at a time. Everything about answering is the library's; this file only adapts.

The library surface it uses: `load_answerer(index, generator, device=)`, the model that
answers for the server's own Index (no second Index is opened), and
`Generator(index, answerer).ask(question, AskConfig(k=, where=, joint=)) -> Answer` with
`Answer.to_dict()`. Pairing the loaded answerer with the server's live Index keeps answers on
the newest generation without reloading the model."""

from __future__ import annotations

import importlib
import queue
import threading
from collections.abc import Callable, Iterator
from types import ModuleType

from mmindex.errors import MmindexError
from mmindex.models.llm import ASK_EXTRA_MISSING, ask_extra_installed

_REQUIRED = ("load_answerer", "resolve_generator", "Generator", "AskConfig")


class AnswersUnavailable(Exception):
    """No generator here (501), or it cannot load for this index (503); the message says which."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def generator_module() -> ModuleType | None:
    """mmindex.ask.generator when this installation can answer (the `ask` extra is installed)."""
    if not ask_extra_installed():
        return None
    try:
        module = importlib.import_module("mmindex.ask.generator")
    except ImportError:
        return None
    return module if all(hasattr(module, name) for name in _REQUIRED) else None


class Answers:
    def __init__(self, find_module=generator_module, device: str = "cpu",
                 generator: str | None = None):
        self._find_module = find_module
        self._device = device  # where the answering model runs: `serve --device`
        self._generator = generator  # `serve --generator`; None: the index's default
        self._answerer = None
        # One answer at a time: generation takes every core and most of the memory budget.
        self._lock = threading.Lock()

    def available(self) -> bool:
        return self._find_module() is not None

    def unavailable_reason(self, index) -> str | None:
        """Why /api/ask cannot answer for this index (None: it can), without loading a
        model, so the page can explain instead of failing on click."""
        module = self._find_module()
        if module is None:
            return f"{ASK_EXTRA_MISSING}; search works"
        if self._answerer is not None:
            return None
        try:
            module.resolve_generator(index, self._generator)
        except MmindexError as exc:
            return str(exc)
        return None

    def ask(self, index, question: str, k: int, where: str | None, joint: bool = False,
            on_text: Callable[[str], None] | None = None, tiles: int = 0) -> dict:
        module = self._module()
        with self._lock:
            generator = module.Generator(index, self._loaded_answerer(module, index))
            answer = generator.ask(question, module.AskConfig(k=k, where=where, joint=joint,
                                                              tiles=tiles), on_text=on_text)
        return answer.to_dict()

    def stream(self, index, question: str, k: int, where: str | None,
               joint: bool = False, tiles: int = 0) -> Iterator[tuple[str, dict]]:
        """("token", {"text": piece}) events while the answer is generated, then ("answer",
        the whole answer). Unavailability is raised here, before the first event, so it can
        still be a status code; a failure while generating is raised from the iterator."""
        module = self._module()
        with self._lock:
            self._loaded_answerer(module, index)
        events: queue.Queue = queue.Queue()

        def generate() -> None:  # on its own thread: the caller reads events as they come
            try:
                answer = self.ask(index, question, k, where, joint,
                                  on_text=lambda text: events.put(("token", {"text": text})),
                                  tiles=tiles)
                events.put(("answer", answer))
            except Exception as exc:  # handed to the reader, which maps it to an error event
                events.put(("failed", exc))
            events.put(None)

        threading.Thread(target=generate, name="mmindex-ask", daemon=True).start()
        return _until_done(events)

    def _module(self) -> ModuleType:
        module = self._find_module()
        if module is None:
            raise AnswersUnavailable(501, f"{ASK_EXTRA_MISSING}; search works")
        return module

    def _loaded_answerer(self, module: ModuleType, index):
        if self._answerer is None:
            try:
                self._answerer = module.load_answerer(index, self._generator,
                                                      device=self._device)
            except MmindexError as exc:  # no generator, no projector, no weights offline...
                raise AnswersUnavailable(503, f"answers are unavailable: {exc}") from None
        return self._answerer


def _until_done(events: queue.Queue) -> Iterator[tuple[str, dict]]:
    while (event := events.get()) is not None:
        if event[0] == "failed":
            raise event[1]
        yield event
