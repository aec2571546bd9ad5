"""The fake OpenAI, Anthropic and Gemini servers as one process, for clients in other languages:
`python -m tests.fakes.serve ENV_FILE` starts them on free loopback ports, writes their base URLs
to ENV_FILE as `E2E_OPENAI_URL=...` lines (written last, so its presence means they serve), and
serves until SIGTERM. Unscripted, each echoes the last user message in its own wire format."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.gemini import FakeGemini
from tests.fakes.openai import FakeOpenAI


async def serve(env_file: Path) -> None:
    async with FakeOpenAI() as openai, FakeAnthropic() as anthropic, FakeGemini() as gemini:
        urls = {"OPENAI": openai.base_url, "ANTHROPIC": anthropic.base_url, "GEMINI": gemini.base_url}
        partial = env_file.with_suffix(".partial")
        partial.write_text("".join(f"E2E_{name}_URL={url}\n" for name, url in urls.items()))
        partial.rename(env_file)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1])))
