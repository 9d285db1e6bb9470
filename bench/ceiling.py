"""The ceiling for bench/runtime.py: a bare FastAPI endpoint that calls the model server directly.

Same request and response shape as the runtime's /v1/invoke, one chat completion per request,
no framework: whatever the runtime adds on top of this is its overhead.
"""

from __future__ import annotations

import os
import sys

import httpx
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

MODEL_URL = os.environ["CEILING_MODEL_URL"]


class Invoke(BaseModel):
    input: str


app = FastAPI()
client = httpx.AsyncClient(timeout=60)


@app.post("/v1/invoke")
async def invoke(body: Invoke) -> dict[str, object]:
    response = await client.post(
        f"{MODEL_URL}/chat/completions",
        json={"model": "fake-model", "messages": [{"role": "user", "content": body.input}]},
    )
    data = response.json()
    return {"output": data["choices"][0]["message"]["content"], "usage": data["usage"]}


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ready"}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
