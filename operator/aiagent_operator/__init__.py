"""The AIAgent operator: reconciles `aiagents.dev/v1alpha1` AIAgents into running agents."""

__version__ = "0.1.0"
