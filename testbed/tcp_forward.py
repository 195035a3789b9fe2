"""Plain TCP forwarder: listen on one address, connect each client to a target address.

Why: on Linux, containers reach the host through the bridge gateway (`host.docker.internal` via
`extra_hosts: host-gateway`), so an Ollama bound to 127.0.0.1 only is unreachable from them
(https://docs.docker.com/reference/cli/docker/container/run/#add-host).
When the testbed finds a real Ollama (or a double it did not start) on 127.0.0.1:11434, it
runs this on <bridge gateway>:11434 -> 127.0.0.1:11434. Docker Desktop on the Mac needs none of this.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _serve(listen: tuple[str, int], target: tuple[str, int]) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*target)
        except OSError:
            client_w.close()
            return
        # When either side finishes, the other pipe sees EOF on its own; gather waits for both.
        await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))

    server = await asyncio.start_server(handle, *listen)
    host, port = server.sockets[0].getsockname()[:2]  # the real port when listening on port 0 (tests)
    print(f"forwarding {host}:{port} -> {target[0]}:{target[1]}", flush=True)
    async with server:
        await server.serve_forever()


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("listen", type=_addr, help="HOST:PORT to listen on")
    parser.add_argument("target", type=_addr, help="HOST:PORT to connect to")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.listen, args.target))


if __name__ == "__main__":
    main()
