"""Small HTTP servers with known behaviour, for testing tricorn bench: python bench_targets.py MODE FD [uvloop].

  delay:MS       answer every request after MS milliseconds
  stall          answer at once, except the whole server freezes for 200 ms at the start of each second
  reset          read the request, then reset the connection
  garbage        answer with bytes that are not HTTP
  chunked        answer with a chunked body of three chunks
  close-mid      promise 100 bytes, send 10, close
  close-delimited  no Content-Length: the body ends when the server closes
"""

import asyncio
import socket
import struct
import sys
import time

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


class Target(asyncio.Protocol):
    def __init__(self, mode):
        self.mode = mode
        self.buffer = b""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            _, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.answer()

    def answer(self):
        mode, t = self.mode, self.transport
        if mode.startswith("delay:"):
            asyncio.get_running_loop().call_later(int(mode[6:]) / 1000, self.write, OK)
        elif mode == "stall":
            if time.monotonic() % 1.0 < 0.2:
                time.sleep(0.2 - time.monotonic() % 1.0)  # the loop itself stops
            t.write(OK)
        elif mode == "reset":
            sock = t.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            t.abort()
        elif mode == "garbage":
            t.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        elif mode == "chunked":
            t.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n")
        elif mode == "close-mid":
            t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
            t.close()
        elif mode == "close-delimited":
            t.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * 1000)
            t.close()

    def write(self, data):
        if not self.transport.is_closing():
            self.transport.write(data)


async def main(mode, fd):
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    server = await asyncio.get_running_loop().create_server(lambda: Target(mode), sock=sock)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if sys.argv[3:] == ["uvloop"]:  # faster, to measure the generator's ceiling; its timers fire up to 1 ms early
        import uvloop

        uvloop.new_event_loop().run_until_complete(main(sys.argv[1], int(sys.argv[2])))
    else:
        asyncio.run(main(sys.argv[1], int(sys.argv[2])))
