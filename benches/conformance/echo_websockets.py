#!/usr/bin/env python3
"""An echo backend in Python's `websockets` (permessage-deflate on), for the
Autobahn cases of section 12 and 13 (compression) through the proxy.

    echo_websockets.py PORT
"""

import asyncio
import sys

from websockets.asyncio.server import serve


async def echo(connection):
    async for message in connection:
        await connection.send(message)


async def main(port):
    async with serve(echo, "127.0.0.1", port, max_size=None, ping_interval=None):
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
