import asyncio

from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocketDisconnect


async def numbers():
    for i in range(5):
        yield f"{i}\n".encode()
        await asyncio.sleep(0.01)


async def stream(request):
    return StreamingResponse(numbers(), media_type="text/plain")


async def upload(request):
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
    return JSONResponse({"size": total})


async def index(request):
    return JSONResponse({"path": request.url.path, "root_path": request.scope["root_path"]})


async def ws(websocket):
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text("echo: " + message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        pass


app = Starlette(routes=[Route("/", index), Route("/stream", stream), Route("/upload", upload, methods=["POST"]),
                        WebSocketRoute("/ws", ws)])
