"""The generic agent runtime: serves one CrewAI or LangChain agent described by agent.yaml."""

__version__ = "0.1.0"
