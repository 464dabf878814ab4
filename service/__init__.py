"""Redis-backed, multi-tenant session service for AI-assistant conversations."""
