"""Conversations (= tickets, 工单): customers and their identity, messages with per-conversation sequence
numbers, image attachments, canned responses, and the events to broadcast once a change commits.

Services here hold the rules and only flush; the caller's unit of work commits and then publishes the
returned events (zaima.db.on_commit). Nothing here imports FastAPI or publishes by itself.
"""
