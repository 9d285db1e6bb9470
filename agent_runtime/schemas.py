"""Request and response bodies of the HTTP API (they make the OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SESSION_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"


class ErrorBody(BaseModel):
    type: str = Field(description="Machine-readable kind, e.g. invalid_request, provider_timeout.")
    message: str = Field(description="What went wrong, for a person.")
    request_id: str | None = Field(None, description="Quote it when reporting a problem.")


class ErrorResponse(BaseModel):
    error: ErrorBody


class InvokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str = Field(min_length=1, description="The user's message.")
    session_id: str | None = Field(
        None,
        pattern=SESSION_ID_PATTERN,
        description="Continue this conversation; omit to start a new one.",
    )


class UsageBody(BaseModel):
    input_tokens: int
    output_tokens: int
    total_tokens: int


class InvokeResponse(BaseModel):
    output: str
    session_id: str = Field(description="Send it back to continue the conversation.")
    usage: UsageBody


class ChatCompletionMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send fields we do not use

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = Field(None, description="Ignored: the agent's configured model answers.")
    messages: list[ChatCompletionMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None


class ChatCompletionChoice(BaseModel):
    index: int = 0
    message: dict[str, str]
    finish_reason: str = "stop"


class ChatCompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: ChatCompletionUsage


class HealthResponse(BaseModel):
    status: str
    framework: str | None = None
