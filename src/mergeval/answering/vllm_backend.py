"""Answering with vLLM's offline engine on this machine's GPU (`pip install 'mergeval[vllm]'`).

One engine per model under test, in a process of its own: vLLM does not give back all the GPU
memory of an engine deleted in-process (its CUDA graphs, NCCL state and allocator pools stay
with the process), so a sweep over many merges would run out of memory by the third model.
Ending the engine's process frees everything; the next model starts a fresh one.

NOT RUN HERE: the machines this project is built and tested on have neither vLLM nor a CUDA
GPU, so this code path is exercised only where both exist (tests/test_answer_backends.py's
vllm test, skipped elsewhere with the reason). It keeps to vLLM's documented offline API:
LLM(model=..., seed=..., gpu_memory_utilization=..., trust_remote_code=...), LLM.chat(
list of conversations, SamplingParams, use_tqdm=False).
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from mergeval.answering.chat import fitted, local_tokenizer
from mergeval.answering.messages import messages_for, todo_batches
from mergeval.answering.settings import GenerationSettings
from mergeval.inputs.items import Item

GPU_MEMORY_UTILIZATION = 0.85
START_TIMEOUT_S = 1800  # loading a 70B model's weights can take many minutes
STOP_TIMEOUT_S = 60


class VLLMEngineError(RuntimeError):
    """The engine's process failed: its message, as the engine's process saw it."""


def _engine_main(conn, model_dir: str, seed: int, trust_remote_code: bool, dtype: str = "auto") -> None:
    """The engine's process: load the model, answer ("chat", conversations, params) requests
    until ("stop",) or the pipe closes, then exit (and free the GPU)."""
    try:
        from vllm import LLM, SamplingParams

        llm = LLM(model=model_dir, seed=seed, gpu_memory_utilization=GPU_MEMORY_UTILIZATION,
                  trust_remote_code=trust_remote_code, dtype=dtype)
    except BaseException as e:  # report why, then end: the parent raises it
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready",))
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request[0] == "stop":
            return
        _, conversations, params = request
        try:
            started = time.perf_counter()
            outs = llm.chat(conversations, SamplingParams(**params), use_tqdm=False)
            seconds = (time.perf_counter() - started) / max(1, len(conversations))
            conn.send(("ok", [o.outputs[0].text.strip() for o in outs], [
                {"prompt_tokens": len(o.prompt_token_ids), "completion_tokens": len(o.outputs[0].token_ids),
                 "seconds": round(seconds, 4)} for o in outs]))
        except BaseException as e:
            conn.send(("error", f"{type(e).__name__}: {e}"))


class VLLMBackend:
    """vLLM's offline engine, in its own process for this model; it batches internally, so a
    batch here is only how often answers are saved."""

    def __init__(self, model_dir: Path, settings: GenerationSettings, trust_remote_code: bool = False):
        self.settings = settings
        ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold CUDA state
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_engine_main, args=(child, str(model_dir), settings.seed, trust_remote_code,
                                                                settings.dtype),
                                 name=f"vllm-{Path(model_dir).name}", daemon=True)
        self._proc.start()
        child.close()
        reply = self._receive(START_TIMEOUT_S)
        if reply[0] != "ready":
            self._end()
            raise VLLMEngineError(f"vLLM could not load {model_dir}: {reply[1]}")
        self.tokenizer = local_tokenizer(str(model_dir))  # to fold what the template refuses (chat.py)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._end()

    def _receive(self, timeout: float):
        if not self._conn.poll(timeout):
            return ("error", f"no reply from the vLLM engine in {timeout:.0f} s")
        try:
            return self._conn.recv()
        except EOFError:
            return ("error", f"the vLLM engine's process ended (exit code {self._proc.exitcode})")

    def _end(self) -> None:
        """Stop the engine's process: its exit gives every byte of GPU memory back."""
        try:
            self._conn.send(("stop",))
        except (BrokenPipeError, OSError):
            pass
        self._proc.join(STOP_TIMEOUT_S)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._conn.close()

    def answer(self, items: list[Item], todo: set[str]):
        s = self.settings  # read at each call: the answer stage sets one length per group of items
        params = {"max_tokens": s.max_new_tokens, "temperature": s.temperature, "top_p": s.top_p, "seed": s.seed}
        for batch in todo_batches(items, todo, max(s.batch_size, 64)):
            fits = [fitted(self.tokenizer, messages_for(it)) for it in batch]  # refusals folded (chat.py)
            self._conn.send(("chat", [m for m, _ in fits], params))
            reply = self._receive(START_TIMEOUT_S)
            if reply[0] != "ok":
                raise VLLMEngineError(f"vLLM failed to answer: {reply[1]}")
            yield batch, reply[1], [{**u, "chat_fold": fold} for u, (_, fold) in zip(reply[2], fits)]
